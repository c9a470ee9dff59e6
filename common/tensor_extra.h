/* tensor_extra — kernels the model's decoding needs beyond tensor.h (same
 * conventions: flat float arrays, torch layouts, no allocation, a _naive
 * twin as the tests' reference). */
#ifndef SEVA_TENSOR_EXTRA_H
#define SEVA_TENSOR_EXTRA_H

/* out (N,OC) = inp (N,C) . w^T, w (OC,C), for the few rows of a decoding
 * step: w is streamed from memory once, in blocks of output channels that
 * stay in cache while every row uses them (sgemm would copy all of w into
 * its packed layout on every call, which costs more than the product when
 * N is small). Each out[n][o] is summed in one fixed order (16 lanes over
 * C, the lanes as a tree, then the tail), whatever N, the row's place
 * and the threads: a row's result does not depend on the rest of the batch. */
void matmul_rows_forward(float *out, const float *inp, const float *w, int N, int C, int OC);
void matmul_rows_forward_naive(float *out, const float *inp, const float *w, int N, int C,
			       int OC);

#endif
