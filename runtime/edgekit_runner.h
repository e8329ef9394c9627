/* edgekit's native step runner: a C API over one ExecuTorch Method (runtime/edgekit_runner.cpp).
 *
 * Link build/kernels/libedgekit_et_kernels.so (this runner and edgekit's kernels, one library:
 * kernels/build.sh) and, from
 * the executorch wheel's lib/, libexecutorch.so plus the kernel/backend libraries the .pte
 * uses, with -Wl,--no-as-needed so their registrations run: libexecutorch_threadpool.so,
 * libexecutorch_kernels_optimized.so (stock ATen ops), libexecutorch_backend_xnnpack.so
 * (XNNPACK-delegated parts). From Python, edgekit/kernels.py loads those with dlopen
 * (RTLD_GLOBAL) before this library; none of them needs libtorch.
 *
 * Every call that can fail returns NULL or non-zero; edgekit_runner_last_error() then holds
 * a one-line reason (per thread). A runner is used by one thread at a time. Nothing is
 * allocated per step. */
#ifndef EDGEKIT_RUNNER_H_
#define EDGEKIT_RUNNER_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

const char* edgekit_runner_last_error(void);

/* ExecuTorch's own threadpool (XNNPACK's, the optimized ATen kernels'): resize it to n
 * threads (n <= 0: leave it) and return its size, or -1 (see edgekit_runner_last_error).
 * Without the Python binding, whose `_unsafe_reset_threadpool` imports torch. The pool is
 * libexecutorch_threadpool.so's, found at run time in the copy already loaded. */
int64_t edgekit_runner_threadpool(int64_t n);

/* Load `method` (edgekit exports "forward") of the .pte at `path`. */
void* edgekit_runner_open(const char* path, const char* method);
void edgekit_runner_close(void* runner);

int64_t edgekit_runner_num_inputs(void* runner);
int64_t edgekit_runner_num_outputs(void* runner);

/* Where input i lives: write it there before each step (edgekit.json lists the inputs,
 * their shapes and dtypes, in order). */
void* edgekit_runner_input(void* runner, int64_t i, int64_t* nbytes);

/* Output i of the last step; valid until the next step. */
const void* edgekit_runner_output(void* runner, int64_t i, int64_t* nbytes);

/* A state buffer by its program name (edgekit.json "state_buffers"), live: reading it reads
 * the state, writing it sets the state. */
void* edgekit_runner_attribute(void* runner, const char* name, int64_t* nbytes);

/* Where each step copies output 0 (NULL: no copy); the buffer must hold its nbytes. */
void edgekit_runner_bind_output(void* runner, void* out, int64_t nbytes);

/* One step: execute, then copy output 0 to the bound buffer. 0 on success. */
int edgekit_runner_step(void* runner);

/* n steps: step t copies in_nbytes[i] bytes from ins[i] + t * in_nbytes[i] into input i (for
 * every input: n_in = edgekit_runner_num_inputs), executes, and copies output 0 to
 * out + t * out_nbytes. 0 on success; on an error the steps before it are done and written,
 * and *n_done (if not NULL) says how many. */
int edgekit_runner_run(void* runner, int64_t n, int64_t n_in, const void* const* ins,
                       const int64_t* in_nbytes, void* out, int64_t out_nbytes, int64_t* n_done);

#ifdef __cplusplus
}
#endif

#endif /* EDGEKIT_RUNNER_H_ */
