/* server/tlscert.c - TLS certificate/key pairs for GnuTLS (see tlscert.h). */
#include "server/tlscert.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "server/secret_file.h"

#define MAX_CHAIN 16
#define PEM_MAX (1u << 20)

typedef struct pair pair;
struct pair {
    gnutls_pcert_st chain[MAX_CHAIN];
    unsigned nchain;
    gnutls_privkey_t key;
    char *cert_pem, *key_pem; /* kept to tell an unchanged reload */
    size_t cert_len, key_len;
    pair *older;
};

struct chex_tls {
    pthread_mutex_t lock;
    char cert_file[CHEX_PATH_MAX], key_file[CHEX_PATH_MAX];
    pair *current; /* newest; older ones hang off it */
};

static _Atomic(chex_tls *) active;

static void pair_free(pair *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->nchain; i++)
        gnutls_pcert_deinit(&p->chain[i]);
    if (p->key)
        gnutls_privkey_deinit(p->key);
    chex_secret_free(p->cert_pem, p->cert_len);
    chex_secret_free(p->key_pem, p->key_len);
    free(p);
}

/* The pair of cert_pem/key_pem after GnuTLS checked the key matches. */
static pair *pair_make(const chex_tls *t, char *cert_pem, size_t cert_len, char *key_pem,
                       size_t key_len, char *msg, size_t msglen)
{
    gnutls_datum_t cd = {(unsigned char *)cert_pem, (unsigned)cert_len};
    gnutls_datum_t kd = {(unsigned char *)key_pem, (unsigned)key_len};
    gnutls_certificate_credentials_t probe;
    if (gnutls_certificate_allocate_credentials(&probe) < 0) {
        snprintf(msg, msglen, "tls_cert_file: out of memory");
        return NULL;
    }
    int rc = gnutls_certificate_set_x509_key_mem(probe, &cd, &kd, GNUTLS_X509_FMT_PEM);
    gnutls_certificate_free_credentials(probe);
    if (rc < 0) {
        snprintf(msg, msglen, "tls_cert_file/tls_key_file: %s and %s: %s", t->cert_file,
                 t->key_file, gnutls_strerror(rc));
        return NULL;
    }
    pair *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(msg, msglen, "tls_cert_file: out of memory");
        return NULL;
    }
    p->nchain = MAX_CHAIN;
    rc = gnutls_pcert_list_import_x509_raw(p->chain, &p->nchain, &cd, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0) {
        p->nchain = 0;
        snprintf(msg, msglen, "tls_cert_file: %s: %s", t->cert_file, gnutls_strerror(rc));
        pair_free(p);
        return NULL;
    }
    if ((rc = gnutls_privkey_init(&p->key)) < 0 ||
        (rc = gnutls_privkey_import_x509_raw(p->key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        snprintf(msg, msglen, "tls_key_file: %s: %s", t->key_file, gnutls_strerror(rc));
        pair_free(p);
        return NULL;
    }
    p->cert_pem = cert_pem;
    p->cert_len = cert_len;
    p->key_pem = key_pem;
    p->key_len = key_len;
    return p;
}

/* Reads both files; returns a new pair, or NULL with *unchanged set when
 * they hold what cur holds, or NULL with msg. */
static pair *load(const chex_tls *t, const pair *cur, int *unchanged, char *msg, size_t msglen)
{
    *unchanged = 0;
    size_t cl = 0, kl = 0;
    char *c = chex_secret_read(t->cert_file, "tls_cert_file", PEM_MAX, &cl, msg, msglen);
    if (!c)
        return NULL;
    char *k = chex_secret_read(t->key_file, "tls_key_file", PEM_MAX, &kl, msg, msglen);
    if (!k) {
        chex_secret_free(c, cl);
        return NULL;
    }
    if (cur && cl == cur->cert_len && kl == cur->key_len && memcmp(c, cur->cert_pem, cl) == 0 &&
        memcmp(k, cur->key_pem, kl) == 0) {
        *unchanged = 1;
        chex_secret_free(c, cl);
        chex_secret_free(k, kl);
        return NULL;
    }
    pair *p = pair_make(t, c, cl, k, kl, msg, msglen);
    if (!p) {
        chex_secret_free(c, cl);
        chex_secret_free(k, kl);
    }
    return p;
}

int chex_tls_open(chex_tls **out, const char *cert_file, const char *key_file, char *msg,
                  size_t msglen)
{
    *out = NULL;
    chex_tls *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&t->lock, NULL);
    snprintf(t->cert_file, sizeof t->cert_file, "%s", cert_file);
    snprintf(t->key_file, sizeof t->key_file, "%s", key_file);
    int unchanged;
    t->current = load(t, NULL, &unchanged, msg, msglen);
    if (!t->current) {
        chex_tls_free(t);
        return -1;
    }
    chex_tls *none = NULL;
    if (!atomic_compare_exchange_strong(&active, &none, t)) {
        snprintf(msg, msglen, "tls_cert_file: another TLS daemon is running in this process");
        chex_tls_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int chex_tls_reload(chex_tls *t, char *msg, size_t msglen)
{
    pthread_mutex_lock(&t->lock);
    int unchanged = 0;
    pair *p = load(t, t->current, &unchanged, msg, msglen);
    if (p) {
        p->older = t->current;
        t->current = p;
    }
    pthread_mutex_unlock(&t->lock);
    return p ? 1 : unchanged ? 0 : -1;
}

static int retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                    gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
    (void)session;
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    chex_tls *t = atomic_load(&active);
    if (!t)
        return -1;
    pthread_mutex_lock(&t->lock);
    *pcert = t->current->chain;
    *pcert_length = t->current->nchain;
    *pkey = t->current->key;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

void *chex_tls_mhd_callback(void)
{
    return (void *)(gnutls_certificate_retrieve_function2 *)retrieve;
}

void chex_tls_free(chex_tls *t)
{
    if (!t)
        return;
    chex_tls *self = t;
    atomic_compare_exchange_strong(&active, &self, NULL);
    for (pair *p = t->current, *next; p; p = next) {
        next = p->older;
        pair_free(p);
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}
