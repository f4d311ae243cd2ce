/*
 * auth.h - credentials: password hashing (yescrypt through libcrypt's
 * crypt_r, the library's default cost), session tokens (32 random bytes,
 * sent base64url, stored only as their SHA-256) and the login throttle.
 *
 * Everything here is pure computation and may run on any thread; hashing
 * takes tens of milliseconds on purpose, so it never runs on the service
 * thread. Functions return 0 on success and -1 on failure.
 */
#ifndef CHATD_AUTH_H
#define CHATD_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_HASH_MAX 160          /* fits STORE_HASH_MAX */
#define AUTH_TOKEN_BYTES 32
#define AUTH_TOKEN_LEN 43          /* base64url of 32 bytes, no padding */
#define AUTH_SHA256_LEN 32

/* Hashes a password into out (a crypt(3) string such as "$y$j9T$..."). */
int auth_hash_password(const char *password, char *out, size_t outlen);
/* 1 when password matches hash, 0 when not (or the hash is malformed).
 * Takes the same time whether it matches or not. */
int auth_verify_password(const char *password, const char *hash);
/* Burns the time of one verification, for unknown users, so that an unknown
 * name and a wrong password cannot be told apart by timing. */
void auth_verify_dummy(const char *password);

/* Fills token (AUTH_TOKEN_LEN + 1 bytes) with a new random token and
 * hash with its SHA-256. */
int auth_token_new(char *token, uint8_t hash[AUTH_SHA256_LEN]);
/* SHA-256 of a presented token; -1 if it is not a well-formed token. */
int auth_token_hash(const char *token, uint8_t hash[AUTH_SHA256_LEN]);
void auth_sha256(const void *data, size_t len, uint8_t out[AUTH_SHA256_LEN]);
/* Fills buf with n cryptographically random bytes. */
int auth_random(void *buf, size_t n);

/* Login throttle: after AUTH_THROTTLE_AFTER failures in a row an account is
 * locked; the lock lasts AUTH_THROTTLE_BASE_MS and doubles with each further
 * failure, capped at AUTH_THROTTLE_MAX_MS. Returns the lock's end (ms since
 * the epoch) after the given count of failures, or 0 when not locked. */
#define AUTH_THROTTLE_AFTER 5
#define AUTH_THROTTLE_BASE_MS 30000
#define AUTH_THROTTLE_MAX_MS (15 * 60 * 1000)
int64_t auth_throttle_until(int failures, int64_t now);

#endif
