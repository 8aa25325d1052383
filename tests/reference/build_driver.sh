# tests/reference/build_driver.sh - sourced by the reference tests: compiles
# ref_driver.c against $BUILD/libchex_model.a into $1 (no Makefile rule needed).
build_ref_driver() {
  ${CC:-cc} -O2 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -I. \
    tests/reference/ref_driver.c "$BUILD/libchex_model.a" -ljansson -lm -o "$1"
}
