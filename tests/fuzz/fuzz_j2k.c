/* tests/fuzz/fuzz_j2k.c - libFuzzer target: chex_j2k_probe / chex_j2k_decode
 * (preprocessing/codecs.h) on arbitrary frame bytes; see fuzz_codec_common.h. */
#include "tests/fuzz/fuzz_codec_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_codec(data, size, chex_j2k_probe, chex_j2k_decode);
    return 0;
}
