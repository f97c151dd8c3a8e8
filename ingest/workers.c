/* workers: thread pool with completions delivered on the event loop (see workers.h). */
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORKERS_MAX_THREADS 64

typedef struct task {
    workers_run_fn run;
    workers_done_fn done;
    void *arg;
    struct task *next;
} task;

typedef struct task_list {
    task *head, *tail;
    size_t n;
} task_list;

struct workers {
    struct event_base *base;
    pthread_mutex_t lock;
    pthread_cond_t wake;   /* todo is non-empty, or stopping */
    task_list todo;        /* submitted, not yet picked by a thread */
    task_list finished;    /* run, waiting for done() on the loop */
    size_t max_queued;
    size_t pending;        /* loop thread only: submitted minus done */
    bool stopping;
    int pipe[2];           /* a worker writes [1] when finished goes from empty to non-empty */
    struct event *ev;
    pthread_t threads[WORKERS_MAX_THREADS];
    int nthreads;
};

static void list_push(task_list *l, task *t) {
    t->next = NULL;
    if (l->tail) l->tail->next = t;
    else l->head = t;
    l->tail = t;
    l->n++;
}

static task *list_pop(task_list *l) {
    task *t = l->head;
    if (!t) return NULL;
    l->head = t->next;
    if (!l->head) l->tail = NULL;
    l->n--;
    return t;
}

static void *worker_main(void *arg) {
    workers *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->todo.head && !w->stopping) pthread_cond_wait(&w->wake, &w->lock);
        if (w->stopping) break; /* queued tasks are cancelled by workers_destroy */
        task *t = list_pop(&w->todo);
        pthread_mutex_unlock(&w->lock);
        t->run(t->arg);
        pthread_mutex_lock(&w->lock);
        bool was_empty = w->finished.head == NULL;
        list_push(&w->finished, t);
        if (was_empty) {
            char c = 1;
            ssize_t r = write(w->pipe[1], &c, 1); /* a full pipe already means "wake up" */
            (void)r;
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* On the loop: every finished task gets its done(). */
static void on_finished(evutil_socket_t fd, short what, void *arg) {
    workers *w = arg;
    char buf[64];
    task_list got;
    (void)what;
    while (read(fd, buf, sizeof buf) > 0) {
    }
    pthread_mutex_lock(&w->lock);
    got = w->finished;
    memset(&w->finished, 0, sizeof w->finished);
    pthread_mutex_unlock(&w->lock);
    for (task *t; (t = list_pop(&got)) != NULL;) {
        w->pending--;
        t->done(t->arg, false);
        free(t);
    }
}

workers *workers_new(struct event_base *base, int nthreads, size_t max_queued, char *errstr,
                     size_t errstr_size) {
    workers *w = calloc(1, sizeof *w);
    if (!w || nthreads < 1 || nthreads > WORKERS_MAX_THREADS || max_queued < 1) {
        snprintf(errstr, errstr_size, w ? "workers: 1..%d threads, queue >= 1" : "out of memory",
                 WORKERS_MAX_THREADS);
        free(w);
        return NULL;
    }
    w->base = base;
    w->max_queued = max_queued;
    w->pipe[0] = w->pipe[1] = -1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    if (pipe2(w->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errstr, errstr_size, "pipe: %s", strerror(errno));
        goto failed;
    }
    w->ev = event_new(base, w->pipe[0], EV_READ | EV_PERSIST, on_finished, w);
    if (!w->ev || event_add(w->ev, NULL) != 0) {
        snprintf(errstr, errstr_size, "cannot watch the workers' pipe");
        goto failed;
    }
    for (; w->nthreads < nthreads; w->nthreads++) {
        if (pthread_create(&w->threads[w->nthreads], NULL, worker_main, w) != 0) {
            snprintf(errstr, errstr_size, "pthread_create failed");
            goto failed;
        }
    }
    return w;
failed:
    workers_destroy(w);
    return NULL;
}

int workers_submit(workers *w, workers_run_fn run, workers_done_fn done, void *arg) {
    task *t = malloc(sizeof *t);
    if (!t) return -1;
    t->run = run;
    t->done = done;
    t->arg = arg;
    pthread_mutex_lock(&w->lock);
    if (w->todo.n >= w->max_queued || w->stopping) {
        pthread_mutex_unlock(&w->lock);
        free(t);
        return -1;
    }
    list_push(&w->todo, t);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    w->pending++;
    return 0;
}

size_t workers_pending(const workers *w) { return w ? w->pending : 0; }

void workers_destroy(workers *w) {
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->nthreads; i++) pthread_join(w->threads[i], NULL);
    /* Threads are gone: both lists are ours. Finished or not, nobody is waiting any more. */
    for (task_list *l = &w->finished; l; l = l == &w->finished ? &w->todo : NULL) {
        for (task *t; (t = list_pop(l)) != NULL;) {
            t->done(t->arg, true);
            free(t);
        }
    }
    if (w->ev) event_free(w->ev);
    for (int i = 0; i < 2; i++)
        if (w->pipe[i] >= 0) close(w->pipe[i]);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
