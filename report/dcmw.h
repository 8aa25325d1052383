/* report/dcmw.h - a small DICOM writer: data sets built in memory, written as
 * Part 10 files in Explicit VR Little Endian (PS3.5, PS3.10).
 *
 * A chex_dcmw_ds is one data set (or one sequence item). Elements are kept in
 * ascending tag order as they are added (a tag added twice is an error), so
 * whatever order the caller adds them in, the encoding is sorted. Values are
 * stored padded to an even length as their VR asks: a trailing space for the
 * text VRs (AE AS CS DA DS DT IS LO LT PN SH ST TM UC UR UT), a trailing NUL for
 * UI and OB/UN. Sequences and their items are written with DEFINED lengths
 * (computed from the content; no undefined lengths, no delimitation items).
 *
 * Not thread-safe per data set (one builder per thread); the functions keep
 * no global state. Every function returns an error code; none exits.
 */
#ifndef CHEX_DCMW_H
#define CHEX_DCMW_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CHEX_DCMW_OK = 0,
    CHEX_DCMW_ERR_ARG,       /* NULL, unknown VR, a tag of group 0002/FFFE in a data set */
    CHEX_DCMW_ERR_VALUE,     /* value too long for its VR, bad characters for UI/CS */
    CHEX_DCMW_ERR_DUPLICATE, /* the tag is already in this data set */
    CHEX_DCMW_ERR_MISSING,   /* Part 10: no SOP Class/Instance UID in the data set */
    CHEX_DCMW_ERR_TOO_LARGE, /* an element or item over 2^32 - 2 bytes */
    CHEX_DCMW_ERR_UID_ROOT,  /* uid_root is not digits and dots, or too long */
    CHEX_DCMW_ERR_RANDOM,    /* the system's random source failed */
    CHEX_DCMW_ERR_NOMEM,
    CHEX_DCMW_ERR_COUNT
} chex_dcmw_err;

/* Static message for an error code (never NULL). */
const char *chex_dcmw_strerror(chex_dcmw_err e);

#define CHEX_DCMW_TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))

/* Explicit VR Little Endian, the only transfer syntax written. */
#define CHEX_DCMW_TS_EXPLICIT_LE "1.2.840.10008.1.2.1"
/* chexd's Implementation Class UID (0002,0012): a fixed UUID under 2.25. */
#define CHEX_DCMW_IMPL_CLASS_UID "2.25.314721984532032660362761285175600909004"

typedef struct chex_dcmw_ds chex_dcmw_ds;

/* A new empty data set; NULL on ENOMEM. Free with chex_dcmw_ds_free, which
 * frees its items too. */
chex_dcmw_ds *chex_dcmw_ds_new(void);
void chex_dcmw_ds_free(chex_dcmw_ds *ds);

/* A string value (s is copied; "" makes an empty, zero-length element, the
 * shape of a Type 2 attribute without a value). vr is two capitals among the
 * string VRs above plus UI. Checks: each backslash-separated value within the
 * VR's maximum length (AE 16, AS 4, CS 16, DA 8, DS 16, DT 26, IS 12, LO 64,
 * PN 64 per component group, SH 16, TM 16, UI 64; LT 10240 and ST 1024 as a
 * whole, no backslash split); UI only digits and dots; CS only capitals,
 * digits, space and '_'. One trailing pad byte is added when the length is odd. */
chex_dcmw_err chex_dcmw_put_str(chex_dcmw_ds *ds, uint32_t tag, const char *vr, const char *s);

/* Binary values, copied: US/SS (n values of 2 bytes), UL/SL/FL (4), FD (8),
 * OB/UN (any n bytes, NUL-padded to even), OW (n even). data holds n bytes in
 * little-endian order. */
chex_dcmw_err chex_dcmw_put_bytes(chex_dcmw_ds *ds, uint32_t tag, const char *vr,
                                  const void *data, size_t n);

/* Convenience: one US value, one UL value. */
chex_dcmw_err chex_dcmw_put_us(chex_dcmw_ds *ds, uint32_t tag, uint16_t v);
chex_dcmw_err chex_dcmw_put_ul(chex_dcmw_ds *ds, uint32_t tag, uint32_t v);

/* An empty sequence (zero items; a Type 2 sequence) when item is NULL;
 * otherwise appends a new item to the sequence tag (created on first use) and
 * returns it in *item, owned by ds. */
chex_dcmw_err chex_dcmw_put_item(chex_dcmw_ds *ds, uint32_t tag, chex_dcmw_ds **item);

/* Number of elements directly in ds. */
size_t chex_dcmw_count(const chex_dcmw_ds *ds);

/* The encoded data set alone (Explicit VR LE, no preamble or meta): *out is
 * malloc'd, the caller frees it. */
chex_dcmw_err chex_dcmw_encode(const chex_dcmw_ds *ds, uint8_t **out, size_t *len);

/* A Part 10 file: 128-byte zero preamble, "DICM", the file meta group
 * (0002,0000) group length, (0002,0001) version 00 01, (0002,0002)/(0002,0003)
 * from the data set's SOP Class/Instance UID (0008,0016)/(0008,0018),
 * (0002,0010) Explicit VR LE, (0002,0012) CHEX_DCMW_IMPL_CLASS_UID,
 * (0002,0013) impl_version (SH, may be NULL), then the data set. */
chex_dcmw_err chex_dcmw_part10(const chex_dcmw_ds *ds, const char *impl_version, uint8_t **out,
                               size_t *len);

/* UIDs.
 * An empty root means the 2.25 arc: each UID is "2.25." + a random (version 4)
 * UUID as a decimal integer (PS3.5 B.2; needs no registered root). Otherwise
 * root is the site's own root, at most CHEX_DCMW_UID_ROOT_MAX characters of
 * digits and dots (components without leading zeros, none empty), and each UID
 * is root + "." + a random 64-bit decimal: at most 64 characters in all. */
#define CHEX_DCMW_UID_ROOT_MAX 43
chex_dcmw_err chex_dcmw_uid_root_check(const char *root, char *msg, size_t msglen);
/* A new UID under root into out (65 bytes). Thread-safe (getrandom). */
chex_dcmw_err chex_dcmw_uid_new(const char *root, char out[65]);

/* DICOM's DA "YYYYMMDD" and TM "HHMMSS" of the local time t, into 9 and 7
 * bytes (caller's). */
void chex_dcmw_date_time(long long t, char da[9], char tm[7]);

#endif
