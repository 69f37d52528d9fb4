/* The chunk engine's hot loops; see kernel.h for the exact contract of each function. */
#include "kernel.h"

#include <string.h>

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void cbr_gear_table(uint64_t gear[256])
{
    uint64_t state = CBR_GEAR_SEED;
    for (int i = 0; i < 256; i++)
        gear[i] = splitmix64(&state);
}

uint64_t cbr_cdc_mask(unsigned bits)
{
    /* Spreading the one-bits (the paper's zero padding) makes each test depend on a wider window
     * of recent bytes than a run of adjacent bits would. Bit 63 stays clear so that cdc_search can
     * test the hash shifted left by one. */
    uint64_t mask = 0;
    for (unsigned i = 0; i < bits; i++)
        mask |= UINT64_C(1) << (CBR_MASK_HIGH - (i * CBR_MASK_SPAN) / bits);
    return mask;
}

void cbr_cdc_params_init(cbr_cdc_params *p, size_t min_size, size_t avg_size, size_t max_size,
                         const uint64_t *gear)
{
    unsigned bits = 0;
    while ((avg_size >> (bits + 1)) != 0)
        bits++;
    p->min_size = min_size;
    p->avg_size = avg_size;
    p->max_size = max_size;
    p->mask_s = cbr_cdc_mask(bits + 2); /* normalised chunking, level 2 */
    p->mask_l = cbr_cdc_mask(bits - 2);
    p->gear = gear;
}

/*
 * Hash bytes [i, end) of one chunk, starting from *fp, testing against mask after every byte.
 * Returns the cut length (index + 1), or 0 if no byte matched and then *fp is the hash at end.
 * Two bytes per step, as in FastCDC 2020: with h1 = 2*h0 + G[a], the value 4*h0 + 2*G[a] is
 * 2*h1, so testing it against 2*mask tests h1 against mask (mask has bit 63 clear), and adding
 * G[b] gives h2. The serial shift-add chain is what bounds this loop; this form measured about
 * 1.3x the one-byte loop (unrolling further to four bytes gained nothing).
 */
static size_t cdc_search(const uint64_t *gear, uint64_t mask, const uint8_t *buf, size_t i,
                         size_t end, uint64_t *fp)
{
    uint64_t h = *fp;
    const uint64_t mask2 = mask << 1;
    for (; i + 2 <= end; i += 2) {
        h = (h << 2) + (gear[buf[i]] << 1);
        if (!(h & mask2))
            return i + 1;
        h += gear[buf[i + 1]];
        if (!(h & mask))
            return i + 2;
    }
    if (i < end) {
        h = (h << 1) + gear[buf[i]];
        if (!(h & mask))
            return i + 1;
    }
    *fp = h;
    return 0;
}

size_t cbr_cdc_cut(const cbr_cdc_params *p, const uint8_t *buf, size_t len, int final)
{
    size_t end, barrier, cut;
    uint64_t fp = 0;

    if (len >= p->max_size) {
        end = p->max_size;
    } else if (final) {
        if (len <= p->min_size)
            return len;
        end = len;
    } else {
        if (len < p->min_size)
            return 0;
        end = len;
    }
    /* Bytes before index min_size - 1 are skipped: they cannot end a chunk. */
    barrier = p->avg_size - 1 < end ? p->avg_size - 1 : end;
    cut = cdc_search(p->gear, p->mask_s, buf, p->min_size - 1, barrier, &fp);
    if (cut)
        return cut;
    cut = cdc_search(p->gear, p->mask_l, buf, barrier, end, &fp);
    if (cut)
        return cut;
    return (len >= p->max_size || final) ? end : 0;
}

size_t cbr_cdc_cuts(const cbr_cdc_params *p, const uint8_t *buf, size_t len, int final,
                    size_t *cuts, size_t cap, size_t *consumed)
{
    size_t n = 0, pos = 0;
    while (n < cap && pos < len) {
        size_t cut = cbr_cdc_cut(p, buf + pos, len - pos, final);
        if (cut == 0)
            break;
        pos += cut;
        cuts[n++] = pos;
    }
    *consumed = pos;
    return n;
}

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v); /* an unaligned load, without undefined behaviour */
    return v;
}

static int is_zero(const uint8_t *p, size_t n)
{
    size_t i = 0;
    /* One cache line per test: data blocks usually fail in the first line, zero blocks are read
     * at memory speed (the OR of eight words vectorises). */
    for (; i + 64 <= n; i += 64) {
        uint64_t acc = 0;
        for (int k = 0; k < 64; k += 8)
            acc |= load64(p + i + k);
        if (acc)
            return 0;
    }
    uint64_t acc = 0;
    for (; i + 8 <= n; i += 8)
        acc |= load64(p + i);
    for (; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

void cbr_zero_blocks(const uint8_t *buf, size_t len, size_t block_size, uint8_t *out)
{
    size_t pos = 0;
    while (pos < len) {
        size_t n = len - pos < block_size ? len - pos : block_size;
        *out++ = (uint8_t)is_zero(buf + pos, n);
        pos += n;
    }
}
