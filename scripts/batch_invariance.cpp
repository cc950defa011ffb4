// Batch vs one-token logits, bit for bit: after a 2-token prefix, passes of 2..33 tokens (every
// verify pass SpecQuant can make) against 33 one-token passes over the same tokens, through
// llama.cpp's C API. Usage: batch_invariance MODEL.gguf FLASH_ATTN_TYPE (-1 auto, 0 off, 1 on).
// Built and run under emulation by scripts/check_arm.sh; exit status 0 when every pass agrees.
#include "llama.h"
#include <cstdio>
#include <cstring>
#include <vector>
#include <cstdlib>
int main(int argc, char ** argv) {
    llama_backend_init();
    auto mp = llama_model_default_params();
    if (argc < 3) { fprintf(stderr, "usage: %s MODEL.gguf FLASH_ATTN_TYPE\n", argv[0]); return 2; }
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "could not load %s\n", argv[1]); return 2; }
    auto cp = llama_context_default_params();
    cp.n_ctx = 256; cp.n_batch = 64; cp.n_ubatch = 64; cp.n_threads = 2; cp.n_threads_batch = 2;
    cp.flash_attn_type = (llama_flash_attn_type) atoi(argv[2]);
    llama_context * ctx = llama_init_from_model(model, cp);
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int nv = llama_vocab_n_tokens(vocab);
    std::vector<llama_token> toks;
    for (int i = 0; i < 40; ++i) toks.push_back((i * 7919 + 17) % nv);
    llama_memory_t mem = llama_get_memory(ctx);
    llama_batch b = llama_batch_init(64, 0, 1);
    auto dec = [&](int pos0, int n, bool all) {
        b.n_tokens = n;
        for (int i = 0; i < n; ++i) { b.token[i] = toks[pos0 + i]; b.pos[i] = pos0 + i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = all || i == n - 1; }
        if (llama_decode(ctx, b)) { printf("decode failed\n"); exit(1); }
    };
    llama_memory_clear(mem, true);
    dec(0, 2, false);
    std::vector<float> single;
    for (int i = 0; i < 33; ++i) { dec(2 + i, 1, true); const float * l = llama_get_logits_ith(ctx, 0); single.insert(single.end(), l, l + nv); }
    int bad = 0;
    for (int n = 2; n <= 33; ++n) {
        llama_memory_seq_rm(mem, 0, 2, -1);
        dec(2, n, true);
        int diff = 0;
        for (int r = 0; r < n; ++r) if (memcmp(llama_get_logits_ith(ctx, r), &single[(size_t) r * nv], nv * sizeof(float))) diff++;
        printf("%d:%s ", n, diff ? "DIFF" : "ok");
        bad += diff != 0;
    }
    printf("\n%s\n", bad ? "NOT batch-invariant" : "batch-invariant at every size 2-33");
    return bad != 0;
}
