/*
 * The chunk engine's hot loops: all-zero block scanning and FastCDC cut-point search.
 *
 * Plain C99, no Python, no allocation: callers own every buffer. The CPython binding (_chunker.c)
 * and the pure-Python oracle (reference.py) must agree with these definitions byte for byte;
 * changing the gear seed, the masks or the cut rule moves every chunk boundary, which is a
 * format change (deduplication against older backups is lost).
 */
#ifndef CBR_ENGINE_KERNEL_H
#define CBR_ENGINE_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* Seed of the splitmix64 sequence that fills the gear table. */
#define CBR_GEAR_SEED UINT64_C(0x4342522d47454152) /* "CBR-GEAR" */

/* Mask bits are spread over bit positions CBR_MASK_LOW .. CBR_MASK_HIGH of the gear hash. */
#define CBR_MASK_HIGH 62
#define CBR_MASK_SPAN 48

typedef struct {
    size_t min_size; /* no cut before this many bytes (except the last chunk of a stream) */
    size_t avg_size; /* normalisation point: shorter chunks use mask_s, longer ones mask_l */
    size_t max_size; /* a chunk is cut here at the latest */
    uint64_t mask_s; /* harder mask: bits(avg) + 2 one-bits */
    uint64_t mask_l; /* easier mask: bits(avg) - 2 one-bits */
    const uint64_t *gear; /* 256 entries, see cbr_gear_table */
} cbr_cdc_params;

/* Fill gear[0..255] with the splitmix64 sequence seeded by CBR_GEAR_SEED. */
void cbr_gear_table(uint64_t gear[256]);

/* A mask with `bits` one-bits (1..CBR_MASK_SPAN) spread evenly, highest at CBR_MASK_HIGH. */
uint64_t cbr_cdc_mask(unsigned bits);

/*
 * Fill *p for the given sizes. Preconditions (checked by the caller): 1 <= min <= avg <= max and
 * 8 <= avg < 2^46; bits(avg) is floor(log2(avg)), so a non-power-of-two average is rounded down for the masks.
 */
void cbr_cdc_params_init(cbr_cdc_params *p, size_t min_size, size_t avg_size, size_t max_size,
                         const uint64_t *gear);

/*
 * Length of the chunk that starts at buf[0], given len available bytes.
 * The gear hash starts at zero at byte min_size - 1 (min-size skip); after hashing byte i the
 * candidate length is i + 1, cut if (hash & mask) == 0 with mask_s while i + 1 < avg_size and
 * mask_l from there on. Returns 0 ("need more data") when final is 0, len < max_size and no cut
 * point was found. With final set, the end of the data is a cut: a non-empty buffer never gives 0.
 */
size_t cbr_cdc_cut(const cbr_cdc_params *p, const uint8_t *buf, size_t len, int final);

/*
 * Cut buf[0..len) repeatedly: store up to cap end offsets (relative to buf, increasing) in cuts,
 * return how many were stored, and set *consumed to the last offset stored (0 if none). It stops
 * when cap is reached, when the data is used up, or when cbr_cdc_cut asks for more data.
 */
size_t cbr_cdc_cuts(const cbr_cdc_params *p, const uint8_t *buf, size_t len, int final,
                    size_t *cuts, size_t cap, size_t *consumed);

/*
 * For every block_size block of buf[0..len) (the last one may be shorter) write one byte to out:
 * 1 if the block is all zero, else 0. out must hold ceil(len / block_size) bytes; block_size > 0.
 */
void cbr_zero_blocks(const uint8_t *buf, size_t len, size_t block_size, uint8_t *out);

#endif
