/* server/security.c - security headers on every answer (see security.h). */
#include "server/security.h"

/* blob: for the heat map overlay the page makes from an explain answer. */
const char chex_security_page_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

static const char api_csp[] = "default-src 'none'; frame-ancestors 'none'";

int chex_security_headers(struct MHD_Response *resp, int page, int tls)
{
    int ok = MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES;
    ok &= MHD_add_response_header(resp, "Referrer-Policy", "no-referrer") == MHD_YES;
    ok &= MHD_add_response_header(resp, "Content-Security-Policy",
                                  page ? chex_security_page_csp : api_csp) == MHD_YES;
    if (page)
        ok &= MHD_add_response_header(resp, "X-Frame-Options", "DENY") == MHD_YES;
    if (tls)
        ok &= MHD_add_response_header(resp, "Strict-Transport-Security",
                                      "max-age=31536000") == MHD_YES;
    return ok ? 0 : -1;
}
