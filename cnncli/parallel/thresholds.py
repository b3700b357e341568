"""Every size at which a speed-up starts to pay, in one place.

The values come from ``benchmarks/tune_thresholds.py``, which measures each crossover and
prints its figures (benchmarks/RESULTS.md keeps a run). No NumPy here: ``threads`` imports
this module before NumPy loads.
"""

# ---------------------------------------------------------------- threads inside a layer
#: Element-wise work (ReLU, pooling, bias) smaller than this stays on one thread: the
#: hand-off to another thread costs more than the work.
MIN_ELEMENTS = 1 << 19
#: A conv's im2col pieces run on several threads from this many multiply-adds per batch:
#: small convs' matmuls lose more to the hand-offs and shared cache than they gain.
CONV_THREADS_MIN_MACS = 30_000_000
#: A conv computes its weight and input gradients at once, on two threads, from this many
#: multiply-adds (both products together): two independent tasks pay off sooner.
CONV_PAIR_MIN_MACS = 16_000_000

# ---------------------------------------------------------------- cache-sized pieces
#: im2col matrices are built in row pieces of about this many bytes: pieces near cache size
#: keep the skinny conv matmuls fast (the plain bound only limits memory). Half a MiB keeps
#: LeNet-5's first conv (K = 25) at about 4096 columns, where OpenBLAS runs it fastest.
IM2COL_PIECE_BYTES = 512 * 2**10
#: The weight gradient's long axis is cut into pieces of this many bytes (split-K), so each
#: stays in cache: pays for convs with few input taps.
SPLIT_K_BYTES = 256 * 2**10
#: Pieces shorter than this are not cut: with many taps BLAS blocks the product better.
SPLIT_K_MIN = 1024
#: An input gradient whose im2col matrix is at most this big is one product and one col2im
#: over all rows: fewer, bigger adds.
WHOLE_DCOLS_BYTES = 8 * 2**20
#: A conv weight-gradient product (not cut by split-K) of this many multiply-adds or more
#: is computed as (cols @ dy.T).T: OpenBLAS runs the conv shapes 1.2-2.6x faster that way
#: (taps as the long output side); below it the two take about as long.
TRANSPOSED_WEIGHT_GRAD_MACS = 1_000_000

# ---------------------------------------------------------------- chunked inference
#: Inference splits a batch over threads (one chunk and layer copy each) only when every
#: chunk gets this many images: fewer do not repay a chunk's fixed costs (on the 2-core Xeon
#: of benchmarks/RESULTS.md, LeNet-5 at batch 64 ran 1.3x slower in chunks of 32 than whole;
#: the 2-core EPYC of 2026-12-01 had measured chunks of 32 1.3x faster).
CHUNK_MIN_IMAGES = 64
#: ... and only when every conv does fewer multiply-adds than this on the batch: bigger
#: convs share their own work over the threads better.
CHUNK_MAX_MACS = 64_000_000

# ---------------------------------------------------------------- a second process
#: Each half of a batch trained over two processes has at least this many images.
PROCESS_MIN_IMAGES = 32
#: Weights are copied to the worker and its gradients back every step: beyond this many
#: parameters the copies cost more than a small network's step gains.
PROCESS_MAX_PARAMETERS = 4_000_000
#: The hand-offs cost a fixed time per step: a half batch needs this many multiply-adds in
#: its forward to repay them.
PROCESS_MIN_MACS = 8_000_000
#: An inference batch splits with a worker process when each half has this many images ...
INFERENCE_PROCESS_MIN_IMAGES = 8
#: ... and this many multiply-adds: the hand-off (images, weights and logits through shared
#: memory, a line each way) costs a fixed time. On the 2-core Xeon of benchmarks/RESULTS.md
#: (2026-12-04, 16:43) halves of 5.4 million lost (0.93x of chunks on threads), 6.8 million
#: gained 1.15x, 13.5 million 1.35x.
INFERENCE_PROCESS_MIN_MACS = 6_000_000
