/* server/tlscert.h - chexd's TLS certificate and key, handed to GnuTLS for
 * each handshake through libmicrohttpd's MHD_OPTION_HTTPS_CERT_CALLBACK, so
 * that SIGHUP can rotate them without dropping connections: sessions already
 * established keep theirs, new handshakes get the new pair.
 *
 * Every pair ever loaded is kept until chex_tls_free (GnuTLS may still point
 * at an older pair from a live session); a reload whose files did not change
 * loads nothing, so the list grows only with real rotations.
 * Thread-safe. At most one chex_tls is active in a process (the callback has
 * no closure argument). */
#ifndef CHEX_TLSCERT_H
#define CHEX_TLSCERT_H

#include <stddef.h>

typedef struct chex_tls chex_tls;

/* Loads the PEM certificate (chain) and key and checks they belong together.
 * Returns 0, or -1 with one line in msg naming tls_cert_file/tls_key_file. */
int chex_tls_open(chex_tls **out, const char *cert_file, const char *key_file, char *msg,
                  size_t msglen);

/* Re-reads both files. Returns 1 when a new pair is in force, 0 when the
 * files are unchanged, -1 with msg when they cannot be used (the old pair
 * stays). */
int chex_tls_reload(chex_tls *t, char *msg, size_t msglen);

/* The value for MHD_OPTION_HTTPS_CERT_CALLBACK (a
 * gnutls_certificate_retrieve_function2 *): serves the pair of the active
 * chex_tls. */
void *chex_tls_mhd_callback(void);

/* Frees every pair; call after libmicrohttpd stopped. */
void chex_tls_free(chex_tls *t);

#endif
