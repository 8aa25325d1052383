/* server/security.h - the security headers every chexd answer carries.
 *
 * All answers: X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer,
 * and Strict-Transport-Security when the daemon speaks TLS. The page files
 * (/, /app.js, /style.css) get a Content-Security-Policy that allows only
 * chexd's own script, style and API (no inline code) and forbids framing; API
 * answers get the strictest policy (nothing loads, no framing). Reentrant. */
#ifndef CHEX_SECURITY_H
#define CHEX_SECURITY_H

#include <microhttpd.h>

/* The page's policy (also in docs/API.md). */
extern const char chex_security_page_csp[];

/* Adds the headers to resp. page: a page file; tls: the daemon speaks HTTPS.
 * Returns 0, or -1 when libmicrohttpd refused a header (out of memory). */
int chex_security_headers(struct MHD_Response *resp, int page, int tls);

#endif
