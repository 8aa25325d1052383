/* report/dcmw.c - DICOM writer; see dcmw.h. */
#include "report/dcmw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

typedef struct {
    uint32_t tag;
    char vr[2];
    uint8_t *val; /* padded to even length; NULL for SQ and empty values */
    uint32_t len;
    chex_dcmw_ds **items; /* SQ only */
    size_t nitems, capitems;
} elem;

struct chex_dcmw_ds {
    elem *e;
    size_t n, cap;
};

static const char *const err_msgs[CHEX_DCMW_ERR_COUNT] = {
    [CHEX_DCMW_OK] = "ok",
    [CHEX_DCMW_ERR_ARG] = "bad argument (NULL, unknown VR or reserved tag)",
    [CHEX_DCMW_ERR_VALUE] = "value does not fit its VR (too long or bad characters)",
    [CHEX_DCMW_ERR_DUPLICATE] = "tag already present in the data set",
    [CHEX_DCMW_ERR_MISSING] = "data set lacks SOP Class UID or SOP Instance UID",
    [CHEX_DCMW_ERR_TOO_LARGE] = "element longer than 2^32 - 2 bytes",
    [CHEX_DCMW_ERR_UID_ROOT] = "uid_root must be digits and dots, components without leading "
                               "zeros, at most 43 characters",
    [CHEX_DCMW_ERR_RANDOM] = "system random source failed",
    [CHEX_DCMW_ERR_NOMEM] = "out of memory",
};

const char *chex_dcmw_strerror(chex_dcmw_err e)
{
    if ((int)e < 0 || e >= CHEX_DCMW_ERR_COUNT)
        return "unknown error";
    return err_msgs[e];
}

/* ---- VRs ---- */

typedef enum { K_TEXT, K_UI, K_BIN, K_SQ } vr_kind;

static const struct {
    char vr[3];
    vr_kind kind;
    int longlen;  /* 4-byte length field in explicit VR */
    size_t max;   /* per value (text), 0 = no limit checked */
    int split;    /* multi-valued with backslash */
    size_t unit;  /* binary value size, 1 for byte streams */
} vrs[] = {
    {"AE", K_TEXT, 0, 16, 1, 0},    {"AS", K_TEXT, 0, 4, 1, 0},     {"CS", K_TEXT, 0, 16, 1, 0},
    {"DA", K_TEXT, 0, 8, 1, 0},     {"DS", K_TEXT, 0, 16, 1, 0},    {"DT", K_TEXT, 0, 26, 1, 0},
    {"IS", K_TEXT, 0, 12, 1, 0},    {"LO", K_TEXT, 0, 64, 1, 0},    {"LT", K_TEXT, 0, 10240, 0, 0},
    {"PN", K_TEXT, 0, 194, 1, 0},   {"SH", K_TEXT, 0, 16, 1, 0},    {"ST", K_TEXT, 0, 1024, 0, 0},
    {"TM", K_TEXT, 0, 16, 1, 0},    {"UC", K_TEXT, 1, 0, 1, 0},     {"UR", K_TEXT, 1, 0, 0, 0},
    {"UT", K_TEXT, 1, 0, 0, 0},     {"UI", K_UI, 0, 64, 1, 0},      {"US", K_BIN, 0, 0, 0, 2},
    {"SS", K_BIN, 0, 0, 0, 2},      {"UL", K_BIN, 0, 0, 0, 4},      {"SL", K_BIN, 0, 0, 0, 4},
    {"FL", K_BIN, 0, 0, 0, 4},      {"FD", K_BIN, 0, 0, 0, 8},      {"AT", K_BIN, 0, 0, 0, 4},
    {"OB", K_BIN, 1, 0, 0, 1},      {"UN", K_BIN, 1, 0, 0, 1},      {"OW", K_BIN, 1, 0, 0, 2},
    {"SQ", K_SQ, 1, 0, 0, 0},
};

static int vr_index(const char *vr)
{
    if (!vr)
        return -1;
    for (size_t i = 0; i < sizeof vrs / sizeof vrs[0]; i++)
        if (vr[0] == vrs[i].vr[0] && vr[1] == vrs[i].vr[1] && vr[2] == '\0')
            return (int)i;
    return -1;
}

/* ---- data sets ---- */

chex_dcmw_ds *chex_dcmw_ds_new(void)
{
    return calloc(1, sizeof(chex_dcmw_ds));
}

void chex_dcmw_ds_free(chex_dcmw_ds *ds)
{
    if (!ds)
        return;
    for (size_t i = 0; i < ds->n; i++) {
        free(ds->e[i].val);
        for (size_t k = 0; k < ds->e[i].nitems; k++)
            chex_dcmw_ds_free(ds->e[i].items[k]);
        free(ds->e[i].items);
    }
    free(ds->e);
    free(ds);
}

size_t chex_dcmw_count(const chex_dcmw_ds *ds)
{
    return ds ? ds->n : 0;
}

/* Position where tag belongs; *found when it is already there. */
static size_t find(const chex_dcmw_ds *ds, uint32_t tag, int *found)
{
    size_t lo = 0, hi = ds->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ds->e[mid].tag < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < ds->n && ds->e[lo].tag == tag;
    return lo;
}

/* Inserts a new element (value taken over) in tag order. */
static chex_dcmw_err insert(chex_dcmw_ds *ds, uint32_t tag, const char *vr, uint8_t *val,
                            size_t len)
{
    int found;
    size_t at = find(ds, tag, &found);
    if (found) {
        free(val);
        return CHEX_DCMW_ERR_DUPLICATE;
    }
    if (ds->n == ds->cap) {
        size_t nc = ds->cap ? 2 * ds->cap : 16;
        elem *ne = realloc(ds->e, nc * sizeof *ne);
        if (!ne) {
            free(val);
            return CHEX_DCMW_ERR_NOMEM;
        }
        ds->e = ne;
        ds->cap = nc;
    }
    memmove(ds->e + at + 1, ds->e + at, (ds->n - at) * sizeof *ds->e);
    elem *e = &ds->e[at];
    memset(e, 0, sizeof *e);
    e->tag = tag;
    e->vr[0] = vr[0];
    e->vr[1] = vr[1];
    e->val = val;
    e->len = (uint32_t)len;
    ds->n++;
    return CHEX_DCMW_OK;
}

/* Groups 0000 (command), 0002 (file meta, written by chex_dcmw_part10), FFFE
 * (items) and group lengths (xxxx,0000) never go into a data set. */
static int reserved_tag(uint32_t tag)
{
    uint16_t g = (uint16_t)(tag >> 16);
    return g == 0x0000 || g == 0x0002 || g == 0xFFFE || (tag & 0xFFFF) == 0;
}

static chex_dcmw_err check_text(int k, const char *s, size_t n)
{
    if (vrs[k].kind == K_UI) {
        for (size_t i = 0; i < n; i++)
            if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '\\'))
                return CHEX_DCMW_ERR_VALUE;
    }
    if (vrs[k].vr[0] == 'C' && vrs[k].vr[1] == 'S') {
        for (size_t i = 0; i < n; i++)
            if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == ' ' ||
                  s[i] == '_' || s[i] == '\\'))
                return CHEX_DCMW_ERR_VALUE;
    }
    if (vrs[k].max == 0)
        return n > 0xFFFFFFFEu ? CHEX_DCMW_ERR_TOO_LARGE : CHEX_DCMW_OK;
    if (!vrs[k].split)
        return n > vrs[k].max ? CHEX_DCMW_ERR_VALUE : CHEX_DCMW_OK;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '\\') {
            size_t vlen = i - start;
            if (vrs[k].vr[0] == 'P' && vrs[k].vr[1] == 'N') {
                /* 64 characters per component group (groups split by '=') */
                size_t gs = start;
                for (size_t j = start; j <= i; j++)
                    if (j == i || s[j] == '=') {
                        if (j - gs > 64)
                            return CHEX_DCMW_ERR_VALUE;
                        gs = j + 1;
                    }
            }
            if (vlen > vrs[k].max)
                return CHEX_DCMW_ERR_VALUE;
            start = i + 1;
        }
    }
    /* a short-length VR's whole value must fit in 16 bits */
    return !vrs[k].longlen && n > 0xFFFE ? CHEX_DCMW_ERR_VALUE : CHEX_DCMW_OK;
}

chex_dcmw_err chex_dcmw_put_str(chex_dcmw_ds *ds, uint32_t tag, const char *vr, const char *s)
{
    int k = vr_index(vr);
    if (!ds || !s || k < 0 || (vrs[k].kind != K_TEXT && vrs[k].kind != K_UI) || reserved_tag(tag))
        return CHEX_DCMW_ERR_ARG;
    size_t n = strlen(s);
    chex_dcmw_err err = check_text(k, s, n);
    if (err != CHEX_DCMW_OK)
        return err;
    uint8_t *v = NULL;
    size_t padded = n + (n & 1);
    if (padded) {
        v = malloc(padded);
        if (!v)
            return CHEX_DCMW_ERR_NOMEM;
        memcpy(v, s, n);
        if (n & 1)
            v[n] = vrs[k].kind == K_UI ? '\0' : ' ';
    }
    return insert(ds, tag, vr, v, padded);
}

chex_dcmw_err chex_dcmw_put_bytes(chex_dcmw_ds *ds, uint32_t tag, const char *vr,
                                  const void *data, size_t n)
{
    int k = vr_index(vr);
    if (!ds || (!data && n) || k < 0 || vrs[k].kind != K_BIN || reserved_tag(tag))
        return CHEX_DCMW_ERR_ARG;
    if (n % vrs[k].unit != 0)
        return CHEX_DCMW_ERR_VALUE;
    size_t padded = n + (n & 1);
    if (padded > 0xFFFFFFFEu)
        return CHEX_DCMW_ERR_TOO_LARGE;
    if (!vrs[k].longlen && padded > 0xFFFE)
        return CHEX_DCMW_ERR_VALUE;
    uint8_t *v = NULL;
    if (padded) {
        v = malloc(padded);
        if (!v)
            return CHEX_DCMW_ERR_NOMEM;
        memcpy(v, data, n);
        if (n & 1)
            v[n] = 0;
    }
    return insert(ds, tag, vr, v, padded);
}

chex_dcmw_err chex_dcmw_put_us(chex_dcmw_ds *ds, uint32_t tag, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    return chex_dcmw_put_bytes(ds, tag, "US", b, 2);
}

chex_dcmw_err chex_dcmw_put_ul(chex_dcmw_ds *ds, uint32_t tag, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return chex_dcmw_put_bytes(ds, tag, "UL", b, 4);
}

chex_dcmw_err chex_dcmw_put_item(chex_dcmw_ds *ds, uint32_t tag, chex_dcmw_ds **item)
{
    if (!ds || reserved_tag(tag))
        return CHEX_DCMW_ERR_ARG;
    int found;
    size_t at = find(ds, tag, &found);
    if (found && (ds->e[at].vr[0] != 'S' || ds->e[at].vr[1] != 'Q' || !item))
        return CHEX_DCMW_ERR_DUPLICATE;
    if (!found) {
        chex_dcmw_err err = insert(ds, tag, "SQ", NULL, 0);
        if (err != CHEX_DCMW_OK)
            return err;
    }
    if (!item)
        return CHEX_DCMW_OK;
    elem *e = &ds->e[at];
    if (e->nitems == e->capitems) {
        size_t nc = e->capitems ? 2 * e->capitems : 4;
        chex_dcmw_ds **ni = realloc(e->items, nc * sizeof *ni);
        if (!ni)
            return CHEX_DCMW_ERR_NOMEM;
        e->items = ni;
        e->capitems = nc;
    }
    chex_dcmw_ds *it = chex_dcmw_ds_new();
    if (!it)
        return CHEX_DCMW_ERR_NOMEM;
    e->items[e->nitems++] = it;
    *item = it;
    return CHEX_DCMW_OK;
}

/* ---- encoding ---- */

static int long_vr(const elem *e)
{
    char v[3] = {e->vr[0], e->vr[1], 0};
    return vrs[vr_index(v)].longlen;
}

/* Encoded size of a data set's content; SIZE_MAX when something exceeds the
 * 32-bit length fields. */
static size_t ds_size(const chex_dcmw_ds *ds);

static size_t sq_value_size(const elem *e)
{
    size_t total = 0;
    for (size_t k = 0; k < e->nitems; k++) {
        size_t s = ds_size(e->items[k]);
        if (s == SIZE_MAX || s > 0xFFFFFFFEu - 8 || total > 0xFFFFFFFEu - 8 - s)
            return SIZE_MAX;
        total += 8 + s;
    }
    return total;
}

static size_t ds_size(const chex_dcmw_ds *ds)
{
    size_t total = 0;
    for (size_t i = 0; i < ds->n; i++) {
        const elem *e = &ds->e[i];
        size_t v = e->vr[0] == 'S' && e->vr[1] == 'Q' ? sq_value_size(e) : e->len;
        if (v == SIZE_MAX)
            return SIZE_MAX;
        size_t h = long_vr(e) ? 12 : 8;
        if (total > SIZE_MAX / 2 - v - h)
            return SIZE_MAX;
        total += h + v;
    }
    return total;
}

static uint8_t *put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
    return p + 4;
}

static uint8_t *write_ds(uint8_t *p, const chex_dcmw_ds *ds)
{
    for (size_t i = 0; i < ds->n; i++) {
        const elem *e = &ds->e[i];
        int sq = e->vr[0] == 'S' && e->vr[1] == 'Q';
        size_t v = sq ? sq_value_size(e) : e->len;
        p = put16(p, (uint16_t)(e->tag >> 16));
        p = put16(p, (uint16_t)e->tag);
        *p++ = (uint8_t)e->vr[0];
        *p++ = (uint8_t)e->vr[1];
        if (long_vr(e)) {
            p = put16(p, 0);
            p = put32(p, (uint32_t)v);
        } else {
            p = put16(p, (uint16_t)v);
        }
        if (sq) {
            for (size_t k = 0; k < e->nitems; k++) {
                p = put16(p, 0xFFFE);
                p = put16(p, 0xE000);
                p = put32(p, (uint32_t)ds_size(e->items[k]));
                p = write_ds(p, e->items[k]);
            }
        } else if (e->len) {
            memcpy(p, e->val, e->len);
            p += e->len;
        }
    }
    return p;
}

chex_dcmw_err chex_dcmw_encode(const chex_dcmw_ds *ds, uint8_t **out, size_t *len)
{
    if (!ds || !out || !len)
        return CHEX_DCMW_ERR_ARG;
    *out = NULL;
    *len = 0;
    size_t n = ds_size(ds);
    if (n == SIZE_MAX)
        return CHEX_DCMW_ERR_TOO_LARGE;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return CHEX_DCMW_ERR_NOMEM;
    write_ds(buf, ds);
    *out = buf;
    *len = n;
    return CHEX_DCMW_OK;
}

/* The value of a string element without its padding, or NULL. */
static const elem *get(const chex_dcmw_ds *ds, uint32_t tag)
{
    int found;
    size_t at = find(ds, tag, &found);
    return found ? &ds->e[at] : NULL;
}

chex_dcmw_err chex_dcmw_part10(const chex_dcmw_ds *ds, const char *impl_version, uint8_t **out,
                               size_t *len)
{
    if (!ds || !out || !len)
        return CHEX_DCMW_ERR_ARG;
    *out = NULL;
    *len = 0;
    const elem *cls = get(ds, CHEX_DCMW_TAG(0x0008, 0x0016));
    const elem *inst = get(ds, CHEX_DCMW_TAG(0x0008, 0x0018));
    if (!cls || !inst || !cls->len || !inst->len || cls->vr[0] != 'U' || inst->vr[0] != 'U')
        return CHEX_DCMW_ERR_MISSING;
    /* the meta group is itself a small data set, written by the same code;
     * reserved_tag keeps group 0002 out of callers' data sets, so it is
     * assembled here with insert() directly */
    chex_dcmw_ds *meta = chex_dcmw_ds_new();
    if (!meta)
        return CHEX_DCMW_ERR_NOMEM;
    chex_dcmw_err err = CHEX_DCMW_OK;
    static const uint8_t version[2] = {0, 1};
    const char *ts = CHEX_DCMW_TS_EXPLICIT_LE, *impl = CHEX_DCMW_IMPL_CLASS_UID;
    struct {
        uint16_t el;
        const char *vr;
        const void *v;
        size_t n;
    } m[] = {
        {0x0001, "OB", version, 2},
        {0x0002, "UI", cls->val, cls->len},
        {0x0003, "UI", inst->val, inst->len},
        {0x0010, "UI", ts, strlen(ts)},
        {0x0012, "UI", impl, strlen(impl)},
        {0x0013, "SH", impl_version, impl_version ? strlen(impl_version) : 0},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0] && err == CHEX_DCMW_OK; i++) {
        if (m[i].el == 0x0013 && (!impl_version || !impl_version[0]))
            continue;
        if (m[i].el == 0x0013 && m[i].n > 16) {
            err = CHEX_DCMW_ERR_VALUE;
            break;
        }
        size_t padded = m[i].n + (m[i].n & 1);
        uint8_t *v = malloc(padded);
        if (!v) {
            err = CHEX_DCMW_ERR_NOMEM;
            break;
        }
        memcpy(v, m[i].v, m[i].n);
        if (m[i].n & 1)
            v[m[i].n] = m[i].vr[0] == 'S' ? ' ' : '\0';
        err = insert(meta, CHEX_DCMW_TAG(0x0002, m[i].el), m[i].vr, v, padded);
    }
    size_t mlen = err == CHEX_DCMW_OK ? ds_size(meta) : 0;
    size_t dlen = err == CHEX_DCMW_OK ? ds_size(ds) : 0;
    if (err == CHEX_DCMW_OK && (dlen == SIZE_MAX || dlen > SIZE_MAX / 2))
        err = CHEX_DCMW_ERR_TOO_LARGE;
    uint8_t *buf = NULL;
    if (err == CHEX_DCMW_OK) {
        size_t total = 128 + 4 + 12 + mlen + dlen;
        buf = calloc(1, total);
        if (!buf) {
            err = CHEX_DCMW_ERR_NOMEM;
        } else {
            uint8_t *p = buf + 128;
            memcpy(p, "DICM", 4);
            p += 4;
            p = put16(p, 0x0002);
            p = put16(p, 0x0000);
            *p++ = 'U';
            *p++ = 'L';
            p = put16(p, 4);
            p = put32(p, (uint32_t)mlen);
            p = write_ds(p, meta);
            write_ds(p, ds);
            *out = buf;
            *len = total;
        }
    }
    chex_dcmw_ds_free(meta);
    return err;
}

/* ---- UIDs ---- */

chex_dcmw_err chex_dcmw_uid_root_check(const char *root, char *msg, size_t msglen)
{
    if (!root)
        return CHEX_DCMW_ERR_ARG;
    size_t n = strlen(root);
    const char *why = NULL;
    if (n == 0)
        return CHEX_DCMW_OK;
    if (n > CHEX_DCMW_UID_ROOT_MAX)
        why = "is longer than 43 characters (a UID is at most 64, and chexd appends up to 21)";
    for (size_t i = 0; !why && i < n; i++) {
        char c = root[i];
        if (c != '.' && (c < '0' || c > '9'))
            why = "has a character other than digits and dots";
        else if (c == '.' && (i == 0 || i == n - 1 || root[i - 1] == '.'))
            why = "has an empty component (leading, trailing or double dot)";
        else if (c == '0' && (i == 0 || root[i - 1] == '.') && i + 1 < n && root[i + 1] != '.')
            why = "has a component with a leading zero";
    }
    if (!why)
        return CHEX_DCMW_OK;
    if (msg && msglen)
        snprintf(msg, msglen, "uid_root \"%.*s%s\" %s", n > 64 ? 64 : (int)n, root,
                 n > 64 ? "..." : "", why);
    return CHEX_DCMW_ERR_UID_ROOT;
}

static int fill_random(uint8_t *b, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(b + got, n - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Decimal of a big-endian unsigned integer of n bytes (n <= 16) into out. */
static void big_decimal(const uint8_t *be, size_t n, char *out)
{
    uint32_t limb[4] = {0, 0, 0, 0}; /* most significant first */
    for (size_t i = 0; i < n; i++) {
        size_t pos = 16 - n + i;
        limb[pos / 4] |= (uint32_t)be[i] << (8 * (3 - pos % 4));
    }
    char tmp[48];
    size_t k = 0;
    for (;;) {
        uint64_t rem = 0;
        int zero = 1;
        for (int i = 0; i < 4; i++) {
            uint64_t cur = (rem << 32) | limb[i];
            limb[i] = (uint32_t)(cur / 10);
            rem = cur % 10;
            zero &= limb[i] == 0;
        }
        tmp[k++] = (char)('0' + rem);
        if (zero)
            break;
    }
    for (size_t i = 0; i < k; i++)
        out[i] = tmp[k - 1 - i];
    out[k] = '\0';
}

chex_dcmw_err chex_dcmw_uid_new(const char *root, char out[65])
{
    if (!root || !out)
        return CHEX_DCMW_ERR_ARG;
    out[0] = '\0';
    if (chex_dcmw_uid_root_check(root, NULL, 0) != CHEX_DCMW_OK)
        return CHEX_DCMW_ERR_UID_ROOT;
    uint8_t r[16];
    char dec[48];
    if (root[0] == '\0') {
        if (fill_random(r, 16) != 0)
            return CHEX_DCMW_ERR_RANDOM;
        r[6] = (uint8_t)((r[6] & 0x0F) | 0x40); /* UUID version 4 */
        r[8] = (uint8_t)((r[8] & 0x3F) | 0x80); /* RFC 4122 variant */
        big_decimal(r, 16, dec);
        snprintf(out, 65, "2.25.%s", dec);
    } else {
        if (fill_random(r, 8) != 0)
            return CHEX_DCMW_ERR_RANDOM;
        big_decimal(r, 8, dec);
        snprintf(out, 65, "%s.%s", root, dec);
    }
    return CHEX_DCMW_OK;
}

void chex_dcmw_date_time(long long t, char da[9], char tm[7])
{
    time_t tt = (time_t)t;
    struct tm lt;
    if (!localtime_r(&tt, &lt))
        memset(&lt, 0, sizeof lt);
    if (strftime(da, 9, "%Y%m%d", &lt) != 8)
        snprintf(da, 9, "19700101");
    if (strftime(tm, 7, "%H%M%S", &lt) != 6)
        snprintf(tm, 7, "000000");
}
