/* tests/fuzz/fuzz_jpegls.c - libFuzzer target: chex_jpegls_probe / chex_jpegls_decode
 * (preprocessing/codecs.h) on arbitrary frame bytes; see fuzz_codec_common.h. */
#include "tests/fuzz/fuzz_codec_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_codec(data, size, chex_jpegls_probe, chex_jpegls_decode);
    return 0;
}
