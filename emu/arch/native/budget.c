/* The quantum budget as a Unicorn UC_HOOK_BLOCK callback: no Python per block.
 *
 * Each block that starts takes its size in bytes from the budget; a block
 * that starts with the budget spent stops the CPU (uc_emu_stop, whose address
 * the loader passes in, so that this library is not linked against
 * libunicorn). Same code and translation-cache state, same stop: the
 * budget is deterministic. Python's fallback (emu/arch/native/__init__.py)
 * does the same arithmetic. */
#include <stdint.h>

struct klpemu_budget {
    int64_t remaining;                 /* bytes of blocks still to start */
    uint64_t blocks;                   /* blocks started (statistics) */
    uint64_t bytes;                    /* their bytes (statistics) */
    int (*emu_stop)(void *uc);
};

void klpemu_budget_block(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct klpemu_budget *b = user_data;
    (void)address;
    if (b->remaining <= 0) {
        b->emu_stop(uc);
        return;
    }
    b->remaining -= size;
    b->blocks++;
    b->bytes += size;
}
