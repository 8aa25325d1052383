/* tests/reference/dcmw_random_driver.c - the DICOM writer's property test
 * driver: dcmw_random_driver DIR N SEED writes N random data sets as Part 10
 * files DIR/rand_K.dcm and, beside each, DIR/rand_K.json describing every
 * element given to the writer (tag, VR, value; sequences recursively), for
 * tests/reference/test_dcmw_pydicom.sh to compare with what pydicom reads.
 * Private tags only, so no dictionary VR interferes with the file's. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/dcmw.h"

static unsigned long long rng;
static unsigned rnd(unsigned n)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)((rng >> 33) % n);
}

static void text(char *s, size_t maxlen, const char *alpha)
{
    size_t n = 1 + rnd((unsigned)maxlen), k = strlen(alpha);
    for (size_t i = 0; i < n; i++)
        s[i] = alpha[rnd((unsigned)k)];
    s[n] = '\0';
}

/* Random value of a string VR, values without leading/trailing spaces. */
static void str_value(const char *vr, char *s)
{
    const char *AZ = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    int vm = 1 + (int)rnd(3);
    s[0] = '\0';
    if (!strcmp(vr, "LT") || !strcmp(vr, "ST") || !strcmp(vr, "UT") || !strcmp(vr, "UR"))
        vm = 1;
    for (int v = 0; v < vm; v++) {
        char one[80];
        if (!strcmp(vr, "AE") || !strcmp(vr, "CS") || !strcmp(vr, "SH"))
            text(one, 16, AZ);
        else if (!strcmp(vr, "AS"))
            snprintf(one, sizeof one, "%03u%c", rnd(999), "DWMY"[rnd(4)]);
        else if (!strcmp(vr, "DA"))
            snprintf(one, sizeof one, "%04u%02u%02u", 1900 + rnd(200), 1 + rnd(12), 1 + rnd(28));
        else if (!strcmp(vr, "TM"))
            snprintf(one, sizeof one, "%02u%02u%02u", rnd(24), rnd(60), rnd(60));
        else if (!strcmp(vr, "DT"))
            snprintf(one, sizeof one, "%04u%02u%02u%02u%02u", 1900 + rnd(200), 1 + rnd(12),
                     1 + rnd(28), rnd(24), rnd(60));
        else if (!strcmp(vr, "DS"))
            snprintf(one, sizeof one, "%s%u.%u", rnd(2) ? "-" : "", rnd(100000), 1 + rnd(999));
        else if (!strcmp(vr, "IS"))
            snprintf(one, sizeof one, "%s%u", rnd(2) ? "-" : "", 1 + rnd(99999999));
        else if (!strcmp(vr, "PN"))
            snprintf(one, sizeof one, "%c%s^%c%s", AZ[rnd(26)], "oe", AZ[rnd(26)], "x");
        else if (!strcmp(vr, "UI")) {
            char u[65];
            chex_dcmw_uid_new(rnd(2) ? "" : "1.2.3", u);
            snprintf(one, sizeof one, "%s", u);
        } else {
            text(one, 60, "abcdefghij KLMNOP0123456789^-_=");
            one[0] = 'a';
            one[strlen(one) - 1] = 'z';
        }
        if (v)
            strcat(s, "\\");
        strcat(s, one);
    }
}

static const char *const str_vrs[] = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT",
                                      "PN", "SH", "ST", "TM", "UC", "UR", "UT", "UI"};
static const char *const bin_vrs[] = {"US", "SS", "UL", "SL", "FL", "FD", "OB", "OW", "UN"};

static json_t *fill(chex_dcmw_ds *ds, int depth)
{
    json_t *arr = json_array();
    int n = 1 + (int)rnd(depth ? 6 : 25);
    for (int i = 0; i < n; i++) {
        uint32_t tag = CHEX_DCMW_TAG(0x0009 + 2 * rnd(12), 0x1000 + rnd(0x200));
        unsigned kind = rnd(10);
        json_t *e = json_object();
        json_object_set_new(e, "tag", json_integer(tag));
        chex_dcmw_err err;
        if (kind < 5) {
            const char *vr = str_vrs[rnd(sizeof str_vrs / sizeof str_vrs[0])];
            char s[400];
            if (rnd(8) == 0)
                s[0] = '\0';
            else
                str_value(vr, s);
            err = chex_dcmw_put_str(ds, tag, vr, s);
            json_object_set_new(e, "vr", json_string(vr));
            json_object_set_new(e, "value", json_string(s));
        } else if (kind < 8 || depth >= 3) {
            const char *vr = bin_vrs[rnd(sizeof bin_vrs / sizeof bin_vrs[0])];
            size_t unit = !strcmp(vr, "FD") ? 8 : (vr[1] == 'L' || !strcmp(vr, "FL")) ? 4
                          : (!strcmp(vr, "OB") || !strcmp(vr, "UN")) ? 1 : 2;
            size_t cnt = rnd(5) * (unit == 1 ? 7 : 1);
            uint8_t b[64];
            for (size_t k = 0; k < cnt * unit; k++)
                b[k] = (uint8_t)rnd(256);
            if (!strcmp(vr, "FL") || !strcmp(vr, "FD")) /* finite numbers only */
                for (size_t k = 0; k < cnt; k++)
                    b[k * unit + unit - 1] &= 0x3F;
            err = chex_dcmw_put_bytes(ds, tag, vr, b, cnt * unit);
            char hex[200] = "";
            for (size_t k = 0; k < cnt * unit; k++)
                sprintf(hex + 2 * k, "%02x", b[k]);
            json_object_set_new(e, "vr", json_string(vr));
            json_object_set_new(e, "hex", json_string(hex));
        } else {
            json_t *items = json_array();
            int ni = (int)rnd(3);
            err = ni == 0 ? chex_dcmw_put_item(ds, tag, NULL) : CHEX_DCMW_OK;
            for (int k = 0; k < ni && err == CHEX_DCMW_OK; k++) {
                chex_dcmw_ds *it = NULL;
                err = chex_dcmw_put_item(ds, tag, &it);
                if (err == CHEX_DCMW_OK)
                    json_array_append_new(items, fill(it, depth + 1));
            }
            json_object_set_new(e, "vr", json_string("SQ"));
            json_object_set_new(e, "items", items);
        }
        if (err == CHEX_DCMW_OK) {
            json_array_append_new(arr, e);
        } else {
            json_decref(e);
            if (err != CHEX_DCMW_ERR_DUPLICATE) {
                fprintf(stderr, "writer refused a valid value: %s\n", chex_dcmw_strerror(err));
                exit(1);
            }
        }
    }
    return arr;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: dcmw_random_driver DIR N SEED\n");
        return 2;
    }
    int n = atoi(argv[2]);
    rng = strtoull(argv[3], NULL, 10);
    for (int k = 0; k < n; k++) {
        chex_dcmw_ds *ds = chex_dcmw_ds_new();
        char uid[65];
        chex_dcmw_uid_new("", uid);
        chex_dcmw_put_str(ds, CHEX_DCMW_TAG(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.88.33");
        chex_dcmw_put_str(ds, CHEX_DCMW_TAG(0x0008, 0x0018), "UI", uid);
        json_t *desc = json_pack("{s:s, s:o}", "sop_instance_uid", uid, "elements", fill(ds, 0));
        uint8_t *out = NULL;
        size_t len = 0;
        if (chex_dcmw_part10(ds, "CHEXD_TEST", &out, &len) != CHEX_DCMW_OK) {
            fprintf(stderr, "part10 failed\n");
            return 1;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/rand_%d.dcm", argv[1], k);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(out, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", path);
            return 1;
        }
        snprintf(path, sizeof path, "%s/rand_%d.json", argv[1], k);
        if (json_dump_file(desc, path, JSON_COMPACT) != 0)
            return 1;
        json_decref(desc);
        free(out);
        chex_dcmw_ds_free(ds);
    }
    return 0;
}
