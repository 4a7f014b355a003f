// A layer's recurrence over a whole window as one persistent kernel (kernels/scan.rs has the
// plain loops they are held to, the shapes of every buffer, and the launch arithmetic, tested on
// the CPU). Three kernels: `elman_scan`, the plain recurrence
//
//   forward   S_t = act(P_t + S_{t-1} M^T)             t = 0 .. T-1, S_{-1} = h0
//   backward  D_t = act'(S_t) * (G_t + D_{t+1} M)      t = T-1 .. 0, D_T = 0
//
// where the backward is the forward run backwards in time on M^T (passed transposed, so both
// read rows) with the derivative in place of act: one body for both; and `lstm_scan`, PyTorch's
// LSTM, and `gru_scan`, PyTorch's GRU, whose blocks own units with all of their gates, so the
// pointwise step stays local.
//
// Why persistent (Baidu's persistent RNN, cuDNN's persistent algorithms): a step's product is
// small (B x H x H), so T launches of it are bound by launch latency and by reading M from memory
// T times. Here each block owns `rows` units, loads their rows of M into shared memory once, and
// loops over the T steps, meeting the other blocks at a grid barrier between steps. The host
// launches at most one block per multiprocessor, so every block is resident and the barrier
// cannot deadlock.

#include <stdint.h>

__device__ __forceinline__ float act_fwd(int act, float a) {
    switch (act) {
    case 0: return tanhf(a);
    case 1: return 1.0f / (1.0f + __expf(-a));
    default: return fmaxf(a, 0.0f);
    }
}

// act' from act's output.
__device__ __forceinline__ float act_slope(int act, float s) {
    switch (act) {
    case 0: return 1.0f - s * s;
    case 1: return s * (1.0f - s);
    default: return s > 0.0f ? 1.0f : 0.0f;
    }
}

// Each block's rows of W (or W^T), when they fit (the host sizes it: kernels::scan::Plan).
extern __shared__ float m_rows[];

// All blocks wait here until every block has arrived. sync[0] counts arrivals, sync[1] is the
// generation, bumped by the last block to arrive; both start at 0 (the host zeroes them).
__device__ __forceinline__ void grid_barrier(unsigned int *sync, unsigned int blocks) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned int *gen = sync + 1;
        unsigned int g = *gen;
        // This block's writes of the step are visible before it counts itself in.
        __threadfence();
        if (atomicAdd(sync, 1u) == blocks - 1) {
            atomicExch(sync, 0u);
            __threadfence();
            atomicAdd(sync + 1, 1u);
        } else {
            while (*gen == g) {
                __nanosleep(20);
            }
        }
        __threadfence();
    }
    __syncthreads();
}

// in:   forward P, backward G              (T, B, H)
// m:    forward M, backward M^T            (H, H) row-major
// h0:   forward the first state (B, H); unused backward
// s:    backward the states S (T, B, H); unused forward
// out:  forward S, backward D              (T, B, H)
// sync: two words, zeroed
extern "C" __global__ void elman_scan(const float *__restrict__ in, const float *__restrict__ m,
                                      const float *__restrict__ h0, const float *__restrict__ s,
                                      float *out, unsigned int *sync, int T, int B, int H,
                                      int rows, int act, int backward, int use_shared) {
    const int j0 = blockIdx.x * rows;
    const int nrows = min(rows, H - j0);
    if (nrows <= 0) {
        // Never launched so (the host sizes the grid to the units), but a block that returned
        // early would leave the others at the barrier forever: take part in every barrier.
        for (int n = 0; n + 1 < T; ++n) grid_barrier(sync, gridDim.x);
        return;
    }
    if (use_shared) {
        for (int x = threadIdx.x; x < nrows * H; x += blockDim.x) m_rows[x] = m[(size_t)j0 * H + x];
        __syncthreads();
    }
    const float *my_m = use_shared ? m_rows : m + (size_t)j0 * H;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    const size_t step = (size_t)B * H;

    for (int n = 0; n < T; ++n) {
        const int t = backward ? T - 1 - n : n;
        // The previous step in the scan's direction; none before the first backward step.
        const float *prev = n == 0 ? (backward ? nullptr : h0) : out + (size_t)(backward ? t + 1 : t - 1) * step;
        for (int item = warp; item < B * nrows; item += warps) {
            const int i = item / nrows;
            const int jj = item - i * nrows;
            float acc = 0.0f;
            if (prev != nullptr) {
                const float *row = my_m + (size_t)jj * H;
                const float *p = prev + (size_t)i * H;
                // Other blocks wrote `prev` during the last step: read it through L2 (__ldcg),
                // never from a stale L1 line.
                for (int k = lane; k < H; k += 32) acc += row[k] * __ldcg(p + k);
            }
            for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
            if (lane == 0) {
                const size_t at = (size_t)t * step + (size_t)i * H + j0 + jj;
                out[at] = backward ? act_slope(act, s[at]) * (in[at] + acc) : act_fwd(act, in[at] + acc);
            }
        }
        if (n + 1 < T) grid_barrier(sync, gridDim.x);
    }
}

// The gated cells: a block owns `rows` units with all G of their gates. Forward (backward = 0):
// in = P (T, B, G H), m = W (G H, H; the GRU's b_hn follows as one more row), s0 = each stream's
// first h then (LSTM) c, (B, C H); out = Y (T, B, K H), whose first slots are h then (LSTM) c, as
// s0's. Backward (backward = 1): in = G (T, B, K H), m = W^T (H, G H), s0 = Y, out = D (T, B, 5H):
// the recurrent side (G H: what the product with W saw), then the cell's other blocks; block 4 is
// what reaches step t - 1 past the product. Forward a block keeps G rows of W per unit, backward
// one row of W^T (G H long): both rows * G * H floats. What differs between the cells is their
// pointwise step, below; the loop around it is gated_scan.

// PyTorch's LSTM. Y: h, c, i, f, g, o, c_{t-1}. D: dP_i, dP_f, dP_g, dP_o, dL/dc_{t-1}.
struct Lstm {
    static constexpr int G = 4, K = 7, C = 2;
    // prev: h_{t-1} (H) then c_{t-1} (H); a: the unit's four recurrent products.
    __device__ static void forward(const float *p, const float *a, const float *prev, const float *, float *y,
                                   int H, int j) {
        const float c_prev = __ldcg(prev + H + j);
        const float ig = 1.0f / (1.0f + __expf(-(p[j] + a[0])));
        const float fg = 1.0f / (1.0f + __expf(-(p[H + j] + a[1])));
        const float gg = tanhf(p[2 * H + j] + a[2]);
        const float og = 1.0f / (1.0f + __expf(-(p[3 * H + j] + a[3])));
        const float c = fg * c_prev + ig * gg;
        y[j] = og * tanhf(c);
        y[H + j] = c;
        y[2 * H + j] = ig;
        y[3 * H + j] = fg;
        y[4 * H + j] = gg;
        y[5 * H + j] = og;
        y[6 * H + j] = c_prev;
    }
    // dh: dL/dh_t through step t + 1's product; carry: D_{t+1}'s block 4 (dL/dc_t from t + 1).
    __device__ static void backward(const float *y, const float *g, float dh, float carry, float *d, int H, int j) {
        const float c = y[H + j], ig = y[2 * H + j], fg = y[3 * H + j];
        const float gg = y[4 * H + j], og = y[5 * H + j], cp = y[6 * H + j];
        const float tc = tanhf(c);
        dh += g[j];
        const float dc = g[H + j] + dh * og * (1.0f - tc * tc) + carry;
        const float di = dc * gg + g[2 * H + j];
        const float df = dc * cp + g[3 * H + j];
        const float dg = dc * ig + g[4 * H + j];
        const float d_o = dh * tc + g[5 * H + j];
        d[j] = di * ig * (1.0f - ig);
        d[H + j] = df * fg * (1.0f - fg);
        d[2 * H + j] = dg * (1.0f - gg * gg);
        d[3 * H + j] = d_o * og * (1.0f - og);
        d[4 * H + j] = dc * fg + g[6 * H + j];
    }
};

// PyTorch's GRU (b_hn inside the reset gate's product). Y: h, r, z, n, A_n + b_hn, h_{t-1}.
// D: dP_r, dP_z, dA_n (the recurrent side), dP_n, z * dh (dL/dh_{t-1} past the product).
struct Gru {
    static constexpr int G = 3, K = 6, C = 1;
    __device__ static void forward(const float *p, const float *a, const float *prev, const float *b_hn, float *y,
                                   int H, int j) {
        const float hp = __ldcg(prev + j);
        const float r = 1.0f / (1.0f + __expf(-(p[j] + a[0])));
        const float z = 1.0f / (1.0f + __expf(-(p[H + j] + a[1])));
        const float hn = a[2] + b_hn[j];
        const float nn = tanhf(p[2 * H + j] + r * hn);
        y[j] = (1.0f - z) * nn + z * hp;
        y[H + j] = r;
        y[2 * H + j] = z;
        y[3 * H + j] = nn;
        y[4 * H + j] = hn;
        y[5 * H + j] = hp;
    }
    // carry: D_{t+1}'s block 4, h_t's share of h_{t+1} past the product.
    __device__ static void backward(const float *y, const float *g, float dh, float carry, float *d, int H, int j) {
        const float r = y[H + j], z = y[2 * H + j], nn = y[3 * H + j];
        const float hn = y[4 * H + j], hp = y[5 * H + j];
        dh += g[j] + carry;
        const float dnn = dh * (1.0f - z) + g[3 * H + j];
        const float dz = dh * (hp - nn) + g[2 * H + j];
        const float dpn = dnn * (1.0f - nn * nn);
        const float dr = dpn * hn + g[H + j];
        d[j] = dr * r * (1.0f - r);
        d[H + j] = dz * z * (1.0f - z);
        d[2 * H + j] = dpn * r + g[4 * H + j];
        d[3 * H + j] = dpn;
        d[4 * H + j] = dh * z + g[5 * H + j];
    }
};

template <class Cell>
__device__ void gated_scan(const float *__restrict__ in, const float *__restrict__ m, const float *__restrict__ s0,
                           float *out, unsigned int *sync, int T, int B, int H, int rows, int backward,
                           int use_shared) {
    constexpr int G = Cell::G, K = Cell::K, C = Cell::C;
    const int j0 = blockIdx.x * rows;
    const int nrows = min(rows, H - j0);
    if (nrows <= 0) {
        for (int n = 0; n + 1 < T; ++n) grid_barrier(sync, gridDim.x);
        return;
    }
    const int GH = G * H;
    // Row r of this block's slice: forward, unit jj's gate q is r = G jj + q (row q H + j0 + jj
    // of W); backward, unit jj's row j0 + jj of W^T.
    if (use_shared) {
        for (int x = threadIdx.x; x < nrows * GH; x += blockDim.x) {
            if (backward) {
                m_rows[x] = m[(size_t)j0 * GH + x];
            } else {
                const int r = x / H, k = x - r * H, jj = r / G, q = r - G * jj;
                m_rows[x] = m[((size_t)q * H + j0 + jj) * H + k];
            }
        }
        __syncthreads();
    }
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    const size_t y_step = (size_t)B * K * H, d_step = (size_t)B * 5 * H;

    for (int n = 0; n < T; ++n) {
        const int t = backward ? T - 1 - n : n;
        for (int item = warp; item < B * nrows; item += warps) {
            const int i = item / nrows;
            const int jj = item - i * nrows;
            const int j = j0 + jj;
            if (!backward) {
                // h_{t-1} then (LSTM) c_{t-1}: s0's row, or Y's first slots at t - 1.
                const float *prev = t == 0 ? s0 + (size_t)i * C * H : out + (size_t)(t - 1) * y_step + (size_t)i * K * H;
                float a[G];
                for (int q = 0; q < G; ++q) {
                    const float *row = use_shared ? m_rows + (size_t)(G * jj + q) * H : m + ((size_t)q * H + j) * H;
                    float acc = 0.0f;
                    for (int k = lane; k < H; k += 32) acc += row[k] * __ldcg(prev + k);
                    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
                    a[q] = acc;
                }
                if (lane == 0) {
                    Cell::forward(in + ((size_t)t * B + i) * GH, a, prev, m + (size_t)GH * H,
                                  out + (size_t)t * y_step + (size_t)i * K * H, H, j);
                }
            } else {
                // dL/dh_t through every gate of step t + 1: row j of W^T against D_{t+1}'s
                // recurrent side.
                const float *dn = t + 1 < T ? out + (size_t)(t + 1) * d_step + (size_t)i * 5 * H : nullptr;
                float acc = 0.0f;
                if (dn != nullptr) {
                    const float *row = use_shared ? m_rows + (size_t)jj * GH : m + (size_t)j * GH;
                    for (int k = lane; k < GH; k += 32) acc += row[k] * __ldcg(dn + k);
                }
                for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
                if (lane == 0) {
                    const size_t at = (size_t)t * y_step + (size_t)i * K * H;
                    const float carry = dn != nullptr ? __ldcg(dn + 4 * H + j) : 0.0f;
                    Cell::backward(s0 + at, in + at, acc, carry, out + (size_t)t * d_step + (size_t)i * 5 * H, H, j);
                }
            }
        }
        if (n + 1 < T) grid_barrier(sync, gridDim.x);
    }
}

extern "C" __global__ void lstm_scan(const float *__restrict__ in, const float *__restrict__ m,
                                     const float *__restrict__ s0, float *out, unsigned int *sync, int T, int B,
                                     int H, int rows, int backward, int use_shared) {
    gated_scan<Lstm>(in, m, s0, out, sync, T, B, H, rows, backward, use_shared);
}

extern "C" __global__ void gru_scan(const float *__restrict__ in, const float *__restrict__ m,
                                    const float *__restrict__ s0, float *out, unsigned int *sync, int T, int B,
                                    int H, int rows, int backward, int use_shared) {
    gated_scan<Gru>(in, m, s0, out, sync, T, B, H, rows, backward, use_shared);
}
