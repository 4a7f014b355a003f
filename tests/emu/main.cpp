// Runs one launch of a scan.cu kernel on emulated blocks and threads (cuda_host.h). Reads from
// stdin 15 int32 — kernel (0 elman_scan, 1 lstm_scan, 2 gru_scan), T, B, H, rows, blocks, threads
// per block, shared floats per block (0: rows of W read from global memory), act, backward, then
// the lengths of in, m, third, fourth (elman_scan's s; 0 otherwise) and out — then those arrays as
// f32; writes out (f32) to stdout.
#include <cstdint>
#include <cstdio>
#include <memory>

static std::vector<float> read_floats(size_t n) {
    std::vector<float> v(n);
    if (n && fread(v.data(), 4, n, stdin) != n) { fprintf(stderr, "short input\n"); exit(2); }
    return v;
}

int main() {
    int32_t hd[15];
    if (fread(hd, 4, 15, stdin) != 15) return 2;
    const int kind = hd[0], T = hd[1], B = hd[2], H = hd[3], rows = hd[4];
    const int blocks = hd[5], threads = hd[6], shared = hd[7], act = hd[8], backward = hd[9];
    auto in = read_floats(hd[10]), m = read_floats(hd[11]), third = read_floats(hd[12]), fourth = read_floats(hd[13]);
    std::vector<float> out(hd[14], 0.0f);
    unsigned sync[2] = {0, 0};
    blockDim.x = threads;
    gridDim.x = blocks;
    std::vector<std::unique_ptr<EmuBlock>> bs;
    std::vector<std::unique_ptr<std::barrier<>>> barriers;
    for (int b = 0; b < blocks; ++b) {
        auto blk = std::make_unique<EmuBlock>();
        barriers.push_back(std::make_unique<std::barrier<>>(threads));
        blk->block = barriers.back().get();
        for (int w = 0; w < threads / 32; ++w) {
            barriers.push_back(std::make_unique<std::barrier<>>(32));
            blk->warps.push_back(barriers.back().get());
        }
        blk->shuffle.assign(threads, 0.0f);
        blk->shared.assign(shared > 0 ? shared : 1, 0.0f);
        bs.push_back(std::move(blk));
    }
    std::vector<std::thread> pool;
    for (int b = 0; b < blocks; ++b) {
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, b, t] {
                blockIdx.x = b;
                threadIdx.x = t;
                emu_block = bs[b].get();
                const int use_shared = shared > 0;
                switch (kind) {
                case 0:
                    elman_scan(in.data(), m.data(), third.data(), fourth.data(), out.data(), sync, T, B, H, rows, act,
                               backward, use_shared);
                    break;
                case 1:
                    lstm_scan(in.data(), m.data(), third.data(), out.data(), sync, T, B, H, rows, backward, use_shared);
                    break;
                default:
                    gru_scan(in.data(), m.data(), third.data(), out.data(), sync, T, B, H, rows, backward, use_shared);
                }
            });
        }
    }
    for (auto &t : pool) t.join();
    fwrite(out.data(), 4, out.size(), stdout);
    return 0;
}
