/*
 * auth.c - password hashing, session tokens and the login throttle.
 *
 * Passwords are hashed with yescrypt through libcrypt's crypt_r at the
 * library's default cost; the salt comes from crypt_gensalt_rn, which
 * gathers its own entropy. Verification recomputes the hash and compares it
 * in constant time. Unknown users are verified against a fixed hash made
 * once, so a missing account costs as much as a wrong password.
 *
 * Session tokens are 32 bytes from getrandom(2), sent as base64url without
 * padding (43 characters). The database keeps only the SHA-256 of the token
 * string as the client presents it, so a leaked table cannot be replayed.
 *
 * Everything here is pure computation and may run on any thread. Hashing
 * takes tens of milliseconds and its state is tens of kilobytes, so it runs
 * on worker threads only and that state lives on the heap.
 */
#include "auth.h"

#include <crypt.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/sha.h>

#include "util.h"

/* libcrypt's prefix for yescrypt; count 0 picks the library's default. */
#define AUTH_HASH_PREFIX "$y$"

static const char auth_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static pthread_once_t auth_dummy_once = PTHREAD_ONCE_INIT;
static char auth_dummy_hash[AUTH_HASH_MAX];  /* written once, under the once */

/*
 * Runs crypt_r with its state on the heap (struct crypt_data is about 32 KiB,
 * too much for a small thread stack) and copies a successful result into
 * out. Returns 0, or -1 when libcrypt failed or the result does not fit.
 * The state holds the passphrase, so it is wiped before it is freed.
 */
static int auth_crypt(const char *password, const char *setting, char *out,
                      size_t outlen)
{
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
    const char *r;
    size_t n;
    int rc = -1;

    r = crypt_r(password, setting, cd);
    /* libcrypt signals failure with NULL or a string starting with '*'. */
    if (r != NULL && r[0] != '*') {
        n = strlen(r);
        if (n < outlen) {
            memcpy(out, r, n + 1);
            rc = 0;
        }
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return rc;
}

int auth_hash_password(const char *password, char *out, size_t outlen)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];

    if (password == NULL || out == NULL || outlen == 0)
        return -1;
    out[0] = '\0';
    /* No random bytes passed: libcrypt reads them from the kernel itself. */
    if (crypt_gensalt_rn(AUTH_HASH_PREFIX, 0, NULL, 0, salt,
                         (int)sizeof salt) == NULL)
        return -1;
    if (salt[0] == '*')
        return -1;
    return auth_crypt(password, salt, out, outlen);
}

int auth_verify_password(const char *password, const char *hash)
{
    char computed[AUTH_HASH_MAX];
    size_t stored_len, computed_len;
    int same;

    if (password == NULL || hash == NULL)
        return 0;
    stored_len = strlen(hash);
    /* Only modern "$id$" hashes count: anything else (libcrypt's '*'
     * failure mark, an empty string, a bare word that libcrypt would take
     * as a weak traditional DES hash) is not one of ours. */
    if (stored_len < 4 || stored_len >= AUTH_HASH_MAX || hash[0] != '$')
        return 0;
    /* Zeroed so the comparison below reads defined bytes past a short
     * result; it always covers the stored length. */
    memset(computed, 0, sizeof computed);
    if (auth_crypt(password, hash, computed, sizeof computed) != 0)
        return 0;
    computed_len = strlen(computed);
    same = util_ct_memcmp(computed, hash, stored_len) == 0;
    explicit_bzero(computed, sizeof computed);
    return same && computed_len == stored_len;
}

/* Makes the hash unknown users are checked against, at the same cost as
 * real ones. If that ever fails the dummy falls back to a fixed yescrypt
 * setting at the default cost, which costs the same to compute. */
static void auth_dummy_init(void)
{
    if (auth_hash_password("chatd dummy password", auth_dummy_hash,
                           sizeof auth_dummy_hash) != 0)
        snprintf(auth_dummy_hash, sizeof auth_dummy_hash, "%s",
                 "$y$j9T$chatddummysaltchatdd$");
}

void auth_verify_dummy(const char *password)
{
    pthread_once(&auth_dummy_once, auth_dummy_init);
    (void)auth_verify_password(password != NULL ? password : "",
                               auth_dummy_hash);
}

int auth_random(void *buf, size_t n)
{
    unsigned char *p = buf;

    while (n > 0) {
        /* Reads above 256 bytes may come back short; signals may interrupt
         * a read before the pool is ready. Both just go round again. */
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

void auth_sha256(const void *data, size_t len, uint8_t out[AUTH_SHA256_LEN])
{
    SHA256(data, len, out);
}

/* Encodes n bytes as base64url without padding into out, which must hold
 * (4n + 2) / 3 + 1 bytes. */
static void auth_b64url_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
                     in[i + 2];
        out[o++] = auth_b64url[v >> 18 & 63];
        out[o++] = auth_b64url[v >> 12 & 63];
        out[o++] = auth_b64url[v >> 6 & 63];
        out[o++] = auth_b64url[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = auth_b64url[v >> 18 & 63];
        out[o++] = auth_b64url[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = auth_b64url[v >> 18 & 63];
        out[o++] = auth_b64url[v >> 12 & 63];
        out[o++] = auth_b64url[v >> 6 & 63];
    }
    out[o] = '\0';
}

int auth_token_new(char *token, uint8_t hash[AUTH_SHA256_LEN])
{
    uint8_t raw[AUTH_TOKEN_BYTES];

    if (auth_random(raw, sizeof raw) != 0)
        return -1;
    auth_b64url_encode(raw, sizeof raw, token);
    explicit_bzero(raw, sizeof raw);
    auth_sha256(token, AUTH_TOKEN_LEN, hash);
    return 0;
}

static int auth_is_b64url(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

int auth_token_hash(const char *token, uint8_t hash[AUTH_SHA256_LEN])
{
    size_t i;

    if (token == NULL)
        return -1;
    /* Stops at the first bad byte, NUL included, so it never reads past
     * the end of a short string. */
    for (i = 0; i < AUTH_TOKEN_LEN; i++)
        if (!auth_is_b64url((unsigned char)token[i]))
            return -1;
    if (token[AUTH_TOKEN_LEN] != '\0')
        return -1;
    auth_sha256(token, AUTH_TOKEN_LEN, hash);
    return 0;
}

int64_t auth_throttle_until(int failures, int64_t now)
{
    int64_t lock = AUTH_THROTTLE_BASE_MS;
    int extra;

    if (failures < AUTH_THROTTLE_AFTER)
        return 0;
    /* Double once per failure past the threshold, stopping at the cap, so
     * even INT_MAX failures never shift out of range. */
    for (extra = failures - AUTH_THROTTLE_AFTER;
         extra > 0 && lock < AUTH_THROTTLE_MAX_MS; extra--)
        lock *= 2;
    if (lock > AUTH_THROTTLE_MAX_MS)
        lock = AUTH_THROTTLE_MAX_MS;
    return now + lock;
}
