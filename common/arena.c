/* arena: see arena.h. */
#include "arena.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK 65536

typedef struct chunk {
    struct chunk *next;
    size_t used, size;
    char data[];
} chunk;

struct arena {
    chunk *head; /* the chunk being filled; older ones follow */
};

arena *arena_new(void) { return calloc(1, sizeof(arena)); }

static void chunks_free(chunk *c) {
    while (c) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
}

void arena_destroy(arena *a) {
    if (!a) return;
    chunks_free(a->head);
    free(a);
}

void arena_reset(arena *a) {
    if (!a->head) return;
    chunks_free(a->head->next);
    a->head->next = NULL;
    a->head->used = 0;
}

const char *arena_strndup(arena *a, const char *s, size_t len) {
    chunk *c = a->head;
    if (!c || c->size - c->used < len + 1) {
        size_t size = len + 1 > ARENA_CHUNK ? len + 1 : ARENA_CHUNK;
        chunk *nc = malloc(sizeof *nc + size);
        if (!nc) return NULL;
        nc->used = 0;
        nc->size = size;
        nc->next = c;
        a->head = c = nc;
    }
    char *out = c->data + c->used;
    memcpy(out, s, len);
    out[len] = '\0';
    c->used += len + 1;
    return out;
}

const char *arena_strdup(arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }
