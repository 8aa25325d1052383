/* tests/reference/codec_driver.c - decodes one compressed frame with a
 * preprocessing/codecs.h decoder and writes its samples as raw little-endian
 * uint16 to OUT, then prints "W H SPP PRECISION SIGNED".
 *   codec_driver jpegll|jpegls|j2k FRAME OUT
 *   codec_driver rle FRAME OUT W H SPP BYTES
 * Exit 0 on success, 1 with the decoder's message on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/codecs.h"

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    FILE *fp = fopen(argv[2], "rb");
    if (!fp)
        return 2;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, fp) != (size_t)n)
        return 2;
    fclose(fp);
    char msg[256] = "";
    chex_codec_frame f;
    chex_pre_err e;
    const char *c = argv[1];
    int rw = 0, rh = 0, rs = 0, rb = 0;
    if (strcmp(c, "rle") == 0) {
        if (argc != 8)
            return 2;
        rw = atoi(argv[4]), rh = atoi(argv[5]), rs = atoi(argv[6]), rb = atoi(argv[7]);
        e = chex_rle_probe(buf, (size_t)n, rw, rh, rs, rb, &f, msg, sizeof msg);
    } else if (strcmp(c, "jpegll") == 0) {
        e = chex_jpegll_probe(buf, (size_t)n, &f, msg, sizeof msg);
    } else if (strcmp(c, "jpegls") == 0) {
        e = chex_jpegls_probe(buf, (size_t)n, &f, msg, sizeof msg);
    } else if (strcmp(c, "j2k") == 0) {
        e = chex_j2k_probe(buf, (size_t)n, &f, msg, sizeof msg);
    } else {
        return 2;
    }
    if (e != CHEX_PRE_OK) {
        fprintf(stderr, "probe: %s\n", msg);
        return 1;
    }
    size_t cap = (size_t)f.width * (size_t)f.height * (size_t)f.spp;
    uint16_t *out = malloc(cap * 2 + 2);
    if (!out)
        return 2;
    if (strcmp(c, "rle") == 0)
        e = chex_rle_decode(out, cap, buf, (size_t)n, rw, rh, rs, rb, &f, msg, sizeof msg);
    else if (strcmp(c, "jpegll") == 0)
        e = chex_jpegll_decode(out, cap, buf, (size_t)n, &f, msg, sizeof msg);
    else if (strcmp(c, "jpegls") == 0)
        e = chex_jpegls_decode(out, cap, buf, (size_t)n, &f, msg, sizeof msg);
    else
        e = chex_j2k_decode(out, cap, buf, (size_t)n, &f, msg, sizeof msg);
    if (e != CHEX_PRE_OK) {
        fprintf(stderr, "decode: %s\n", msg);
        return 1;
    }
    FILE *o = fopen(argv[3], "wb");
    if (!o)
        return 2;
    for (size_t i = 0; i < cap; i++) {
        uint8_t b[2] = {(uint8_t)(out[i] & 0xFF), (uint8_t)(out[i] >> 8)};
        fwrite(b, 1, 2, o);
    }
    fclose(o);
    printf("%d %d %d %d %d\n", f.width, f.height, f.spp, f.precision, f.is_signed);
    free(out);
    free(buf);
    return 0;
}
