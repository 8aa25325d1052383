/* model/sha256.h - SHA-256 (FIPS 180-4), streaming; used to fingerprint the
 * weights file so responses can say exactly which weights answered. */
#ifndef CHEX_SHA256_H
#define CHEX_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t total;     /* bytes hashed so far */
    uint8_t buf[64];
    size_t nbuf;
} chex_sha256_ctx;

void chex_sha256_init(chex_sha256_ctx *c);
void chex_sha256_update(chex_sha256_ctx *c, const void *data, size_t len);
void chex_sha256_final(chex_sha256_ctx *c, uint8_t digest[32]);
/* One shot: hex is 64 lowercase hex digits plus NUL. */
void chex_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
