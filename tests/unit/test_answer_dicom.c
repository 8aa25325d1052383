/* tests/unit/test_answer_dicom.c - which Accept headers ask for DICOM answers
 * (server/answer_dicom.h); the answers themselves are checked on the real
 * daemon in tests/integration/test_dicom_accept.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "server/answer_dicom.h"

static void test_accepts(void **state)
{
    (void)state;
    const char *yes[] = {"application/dicom", "Application/DICOM", "application/json, application/dicom",
                         "application/dicom;q=0.5", "application/dicom; q=1, */*;q=0.1",
                         "  application/dicom ;transfer-syntax=1.2.840.10008.1.2.1"};
    const char *no[] = {NULL, "", "application/json", "*/*", "application/dicom+json",
                        "application/dicom+xml, application/json", "application/dicom;q=0",
                        "application/dicom; q=0.0, application/json", "multipart/related"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!chex_answer_dicom_accepts(yes[i]))
            fail_msg("\"%s\" should ask for DICOM", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (chex_answer_dicom_accepts(no[i]))
            fail_msg("\"%s\" should not ask for DICOM", no[i] ? no[i] : "(none)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_accepts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
