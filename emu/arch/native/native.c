/* klpemu's native Unicorn hooks: no Python on the two hottest paths.
 *
 * Both get the libunicorn functions they call as pointers from the loader
 * (emu/arch/native/__init__.py), so this library is not linked against
 * libunicorn. Each has a pure-Python twin with the same effect.
 *
 * The quantum budget (UC_HOOK_BLOCK): each block that starts takes its size
 * in bytes from the budget; a block that starts with the budget spent stops
 * the CPU. Same code and translation-cache state, same stop.
 *
 * The syscall entry (UC_HOOK_INSN for syscall): what the instruction does on
 * hardware and Unicorn leaves to a hook: CPL 0 (a saved kernel context is
 * restored: writing CS does not change the privilege level), rcx = the
 * return address, r11 = rflags, rflags masked, rip = LSTAR. Unicorn adds the
 * instruction's 2 bytes after the hook returns, so rip is set 2 short.
 *
 * The hypercall site (UC_HOOK_CODE on one address): the service's number,
 * its arguments and rsp are read before the Python service runs (a ctypes
 * callback with no arguments, which finds them in the state), and the
 * return it asks for (rax, rsp, then rip) is written after it: no Python
 * register calls on the path every guest->Python service takes. rip is
 * written alone: uc_reg_write redirects the CPU from a hook, Unicorn
 * 2.1.4's uc_reg_write_batch does not. */
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

enum { NR_REGS = 18, RCX = 2, R11 = 11, RIP = 16, RFLAGS = 17 };   /* the engine's batch order */

struct klpemu_syscall {
    void *kernel_context;              /* uc_context * of this CPU at CPL 0 */
    uint64_t entry;                    /* entry_SYSCALL_64 */
    uint64_t rflags;                   /* rflags at entry (SFMASK applied) */
    uint64_t entries;                  /* syscalls entered (statistics) */
    int (*reg_read_batch)(void *uc, int *ids, void **vals, int count);
    int (*reg_write_batch)(void *uc, int *ids, void **vals, int count);
    int (*context_restore)(void *uc, void *context);
    int ids[NR_REGS];
    uint64_t vals[NR_REGS];
    void *ptrs[NR_REGS];
};

void klpemu_syscall_entry(void *uc, void *user_data)
{
    struct klpemu_syscall *s = user_data;
    uint64_t *v = s->vals;
    int i;

    for (i = 0; i < NR_REGS; i++)
        s->ptrs[i] = &v[i];
    s->reg_read_batch(uc, s->ids, s->ptrs, NR_REGS);
    /* added by the Python entry from inside its own hook, this hook may run
     * for that same syscall after it: the CPU is then at the entry already */
    if (v[RIP] == s->entry - 2)
        return;
    s->context_restore(uc, s->kernel_context);
    v[RCX] = v[RIP] + 2;
    v[R11] = v[RFLAGS];
    v[RIP] = s->entry - 2;
    v[RFLAGS] = s->rflags;
    s->reg_write_batch(uc, s->ids, s->ptrs, NR_REGS);
    s->entries++;
}

enum { HC_REGS = 6, HC_RET = 2 };      /* rax rdi rsi rdx rcx rsp; rax rsp */

struct klpemu_hypercall {
    uint64_t regs[HC_REGS];            /* at the site: rax rdi rsi rdx rcx rsp */
    uint64_t ret[HC_RET];              /* set by the service: rax, rsp to return with */
    uint64_t ret_rip;                  /* ... and rip */
    int64_t returning;                 /* set by the service: return with ret[], ret_rip */
    void (*service)(void);             /* the Python service (a ctypes callback) */
    int (*reg_read_batch)(void *uc, int *ids, void **vals, int count);
    int (*reg_write_batch)(void *uc, int *ids, void **vals, int count);
    int (*reg_write)(void *uc, int id, const void *value);
    int read_ids[HC_REGS];
    int ret_ids[HC_RET];
    int rip_id;
};

void klpemu_hypercall(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct klpemu_hypercall *h = user_data;
    void *reads[HC_REGS], *rets[HC_RET];
    int i;

    (void)address;
    (void)size;
    for (i = 0; i < HC_REGS; i++)
        reads[i] = &h->regs[i];
    for (i = 0; i < HC_RET; i++)
        rets[i] = &h->ret[i];
    h->returning = 0;
    h->reg_read_batch(uc, h->read_ids, reads, HC_REGS);
    h->service();
    if (h->returning) {
        h->reg_write_batch(uc, h->ret_ids, rets, HC_RET);
        h->reg_write(uc, h->rip_id, &h->ret_rip);
    }
}
