/* Host emulation of the CUDA that sst's generated kernels use (tests/cuda.rs): one OS thread
   per CUDA thread and the blocks of a grid one after another; __syncthreads and the warp
   shuffles meet at std::barrier, so a kernel runs here with the block's threads interleaved as
   the OS pleases (a missing __syncthreads can show as a wrong number, a divergent one hangs). The
   source that follows is the generated kernel unchanged, then a driver's main(). */
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#define __CUDACC__ 1
#define __device__
#define __forceinline__ inline
#define __global__
#define __shared__ static
using std::fabs; using std::fmax; using std::fmin; using std::isfinite;
template <class T, class U> static inline T sst_cast(U u) { T t; memcpy(&t, &u, sizeof t); return t; }
static inline float __uint_as_float(unsigned b) { return sst_cast<float>(b); }
static inline unsigned __float_as_uint(float x) { return sst_cast<unsigned>(x); }
static inline float __int_as_float(int b) { return sst_cast<float>(b); }
static inline double __longlong_as_double(long long b) { return sst_cast<double>(b); }
static inline long long __double_as_longlong(double x) { return sst_cast<long long>(x); }
struct sst_dim3 { unsigned x, y, z; };
static thread_local sst_dim3 threadIdx, blockIdx;
static sst_dim3 blockDim;
static std::barrier<>* sst_block_barrier;
static std::barrier<>* sst_warp_barrier[32];
/* Lane values, double-buffered: a shuffle writes one buffer, meets its warp, reads; the next
   shuffle uses the other buffer, so one barrier per shuffle suffices (no thread can be two
   shuffles ahead of another of its warp). */
static unsigned long long sst_lane_value[2][1024];
static thread_local int sst_parity;
static inline void __syncthreads() { sst_block_barrier->arrive_and_wait(); }
template <class T> static T __shfl_xor_sync(unsigned, T v, int offset) {
    unsigned t = threadIdx.x;
    unsigned long long bits = 0;
    memcpy(&bits, &v, sizeof v);
    sst_lane_value[sst_parity][t] = bits;
    sst_warp_barrier[t / 32]->arrive_and_wait();
    bits = sst_lane_value[sst_parity][t ^ offset];
    sst_parity ^= 1;
    memcpy(&v, &bits, sizeof v);
    return v;
}
static std::mutex sst_atomics;
static inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    std::lock_guard<std::mutex> hold(sst_atomics);
    unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}
/* Runs `body` as `grid` blocks of `threads` threads: one team of threads takes the blocks in
   turn, meeting at a barrier after each (so a block's __shared__ statics are its own). */
template <class Body> static void sst_launch(unsigned grid, unsigned threads, Body body) {
    std::barrier<> block(threads);
    std::vector<std::barrier<>*> warps;
    for (unsigned w = 0; w < threads / 32; w++) warps.push_back(sst_warp_barrier[w] = new std::barrier<>(32));
    sst_block_barrier = &block;
    blockDim = {threads, 1, 1};
    std::vector<std::thread> team;
    for (unsigned t = 0; t < threads; t++)
        team.emplace_back([=] {
            threadIdx = {t, 0, 0};
            for (unsigned b = 0; b < grid; b++) {
                blockIdx = {b, 0, 0};
                body();
                __syncthreads();
            }
        });
    for (auto& member : team) member.join();
    for (auto* w : warps) delete w;
}
/* The next `count` values of T in `f`, or exit 3. */
template <class T> static std::vector<T> sst_read(FILE* f, size_t count) {
    std::vector<T> out(count);
    if (fread(out.data(), sizeof(T), count, f) != count) { fprintf(stderr, "short input\n"); exit(3); }
    return out;
}
template <class T> static void sst_write(FILE* f, const std::vector<T>& v) { fwrite(v.data(), sizeof(T), v.size(), f); }
