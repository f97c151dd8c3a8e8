/* The fuzz targets as regression tests: replays a stored corpus through one harness's
 * LLVMFuzzerTestOneInput, without libFuzzer (built with the project's compiler and flags, so the
 * harnesses keep compiling, and run under SANITIZE=1 like every test).
 *
 *   test_fuzz_NAME [CORPUS.tar ...]   default: tests/fuzz/corpus/NAME.tar (run from the repo root)
 *
 * A corpus is a plain ustar archive of input files (what libFuzzer's -merge=1 kept: every input
 * that added coverage, plus the reproducers of bugs found). A harness aborts on a broken property,
 * so a regression ends this process with a signal or ASan's exit status; the last line printed
 * names the input being run. Refresh a corpus: run build/fuzz/fuzz_NAME, merge into a fresh
 * directory with -merge=1, then `tar -C DIR --format=ustar -cf tests/fuzz/corpus/NAME.tar .`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define TAR_BLOCK 512
#define CORPUS_MAX_INPUT (1u << 20) /* libFuzzer ran with -max_len=65536 */

/* The size field of a ustar header: octal text, NUL or space terminated. -1 when malformed. */
static long long tar_size(const unsigned char *h) {
    long long n = 0;
    for (int i = 124; i < 136 && h[i] && h[i] != ' '; i++) {
        if (h[i] < '0' || h[i] > '7') return -1;
        n = n * 8 + (h[i] - '0');
    }
    return n;
}

/* Runs every regular file of the archive at path through the harness. Returns how many, or -1
 * (with a message) when the archive cannot be read. */
static long replay_tar(const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char h[TAR_BLOCK];
    uint8_t *buf = malloc(CORPUS_MAX_INPUT);
    long count = -1;
    if (!f || !buf) {
        fprintf(stderr, "%s: cannot open\n", path);
        goto done;
    }
    count = 0;
    while (fread(h, 1, TAR_BLOCK, f) == TAR_BLOCK && h[0]) {
        long long size = tar_size(h);
        if (size < 0 || size > CORPUS_MAX_INPUT) {
            fprintf(stderr, "%s: bad header (entry %ld)\n", path, count);
            count = -1;
            goto done;
        }
        size_t padded = ((size_t)size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
        if (fread(buf, 1, padded, f) != padded) {
            fprintf(stderr, "%s: truncated (entry %ld)\n", path, count);
            count = -1;
            goto done;
        }
        if (h[156] != '0' && h[156] != '\0') continue; /* directories and the like */
        char name[101];
        memcpy(name, h, 100);
        name[100] = '\0';
        fprintf(stderr, "input %s\n", name); /* the culprit, should the harness abort */
        /* a copy of exactly size bytes: ASan then sees a read past the input */
        uint8_t *in = malloc(size ? (size_t)size : 1);
        if (!in) {
            count = -1;
            goto done;
        }
        memcpy(in, buf, (size_t)size);
        LLVMFuzzerTestOneInput(in, (size_t)size);
        free(in);
        count++;
    }
done:
    if (f) fclose(f);
    free(buf);
    return count;
}

int main(int argc, char **argv) {
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    char def[256];
    if (strncmp(name, "test_fuzz_", 10) == 0)
        snprintf(def, sizeof def, "tests/fuzz/corpus/%s.tar", name + 10);
    else
        snprintf(def, sizeof def, "(none)");
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    int nfiles = argc > 1 ? argc - 1 : 1;
    for (int i = 0; i < nfiles; i++) {
        const char *path = argc > 1 ? argv[i + 1] : def;
        long n = replay_tar(path);
        if (n <= 0) {
            fprintf(stderr, "%s: %s\n", path, n == 0 ? "no inputs" : "not replayed");
            return 1;
        }
        printf("%s: %ld inputs replayed, no finding\n", path, n);
    }
    return 0;
}
