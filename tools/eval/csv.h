/* tools/eval/csv.h - a small RFC 4180 CSV reader for labels and predictions files.
 *
 * The parser reads only buf[0..len) (no terminating NUL needed) and copies
 * every field into memory owned by the table. Quoted fields may hold commas,
 * doubled quotes and newlines; CRLF and LF line ends; a UTF-8 BOM is skipped;
 * empty lines are ignored. Reentrant.
 */
#ifndef CHEX_EVAL_CSV_H
#define CHEX_EVAL_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "tools/eval/auroc.h"

typedef struct {
    size_t nrows;      /* rows after the header */
    size_t ncols;      /* fields in the header */
    char **header;     /* ncols NUL-terminated names */
    char ***rows;      /* nrows rows of ncols fields (short rows padded with "") */
    size_t *line;      /* 1-based line number where each row starts */
    /* private */
    char *arena;
    char **cells;
} chex_csv;

/* Parses buf; the first non-empty row is the header. A row with more fields
 * than the header is an error naming its line. On error writes msg and
 * leaves t empty (safe to free). */
chex_eval_err chex_csv_parse(const uint8_t *buf, size_t len, chex_csv *t, char *msg, size_t msglen);

/* Reads a whole file into malloc'd memory, gunzipping it when it is gzip
 * (zlib reads plain files unchanged). Caller frees *buf. */
chex_eval_err chex_csv_read_file(const char *path, uint8_t **buf, size_t *len, char *msg,
                                 size_t msglen);

/* chex_csv_read_file + chex_csv_parse; messages name the file. */
chex_eval_err chex_csv_load(const char *path, chex_csv *t, char *msg, size_t msglen);

void chex_csv_free(chex_csv *t);

/* Column of the first of the NULL-terminated names found in the header
 * (names in order of preference), ignoring case, surrounding blanks, and treating ' ' and '_' as equal; -1 if none. */
int chex_csv_find_col(const chex_csv *t, const char *const *names);

/* Name comparison used everywhere for labels and columns (see above). 1 if equal. */
int chex_eval_name_eq(const char *a, const char *b);

#endif
