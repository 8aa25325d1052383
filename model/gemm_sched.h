/* model/gemm_sched.h - how the convolution drivers (kernels_tmpl.h for fp32,
 * qkernels_tmpl.h for int8) split a GEMM into tasks and run them. Not a
 * public header.
 *
 * A task is one block of nb column panels (packed together, so the weights
 * are reused across the block from L1) times one of msplit chunks of the
 * output-channel panels. */
#ifndef CHEX_GEMM_SCHED_H
#define CHEX_GEMM_SCHED_H

#include <stddef.h>

typedef struct {
    int msplit;   /* chunks of output-channel panels */
    long nb;      /* column panels per block */
    long ntasks;  /* blocks x msplit */
    int nthreads; /* threads worth using (<= ntasks) */
} chex_gemm_plan;

/* panels: column panels; mp_total: output-channel panels; nb_max: most
 * panels one block may hold (the packing budget); nthreads: threads offered. */
static inline chex_gemm_plan chex_gemm_plan_make(long panels, int mp_total, long nb_max,
                                                 int nthreads)
{
    chex_gemm_plan p;
    if (nthreads < 1)
        nthreads = 1;
    /* Split output channels too when there are few column panels, so both
     * cores get work at batch 1 on the small stages. */
    p.msplit = 1;
    while (panels * p.msplit < 4L * nthreads && p.msplit * 2 <= mp_total && nthreads > 1)
        p.msplit *= 2;
    /* Blocks as large as the budget allows while keeping about 4 tasks per
     * thread. */
    nb_max = nb_max < 1 ? 1 : nb_max;
    long nb = panels * p.msplit / (4L * nthreads);
    nb = nb < 1 ? 1 : nb > nb_max ? nb_max : nb;
    const long blocks = (panels + nb - 1) / nb;
    p.nb = (panels + blocks - 1) / blocks;
    p.ntasks = blocks * p.msplit;
    p.nthreads = nthreads > p.ntasks ? (int)p.ntasks : nthreads;
    return p;
}

/* One task: its index, this thread's scratch area, and *last, the block
 * whose panels the area holds (-1 at first; the task repacks when it
 * differs). */
typedef void (*chex_gemm_task_fn)(const void *ctx, long task, void *area, long *last);

/* Runs every task of p: in the caller's thread when p->nthreads is 1 (no
 * OpenMP team, so safe inside a caller's parallel region), else over a team
 * with a dynamic schedule, thread t using scratch + t * area_bytes. */
void chex_gemm_run(const chex_gemm_plan *p, chex_gemm_task_fn fn, const void *ctx,
                   void *scratch, size_t area_bytes);

#endif
