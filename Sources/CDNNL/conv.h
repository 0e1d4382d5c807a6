// oneDNN's forward convolution (inference) for 2-D float32 convolutions whose weight is a
// constant: the weight reordered once into the layout the implementation picks, the activations
// reordered between onnx-train's nchw and the implementation's layout at the node's boundary
// (DnnlConv.swift). Every call runs single-threaded on the calling (pool) thread.
#pragma once
#include "shim.h"
#include <stdlib.h>

/// The activation layouts handled: nchw, and channel blocks of 8 or 16 (nChw8c, nChw16c). For one
/// image, channels c0 ..< c1 (c0 a multiple of the block) of any of them start at c0·H·W and are a
/// tensor of that layout themselves.
static const int OT_LAYOUT_OTHER = -1, OT_LAYOUT_NCHW = 0, OT_LAYOUT_8C = 8, OT_LAYOUT_16C = 16;

static inline dnnl_format_tag_t ot_layout_tag(int layout) {
    return layout == OT_LAYOUT_16C ? dnnl_nChw16c : layout == OT_LAYOUT_8C ? dnnl_nChw8c : dnnl_nchw;
}

/// Which of the handled layouts md is (dims n, c, h, w), or OT_LAYOUT_OTHER.
static inline int ot_layout_of(const dnnl_memory_desc_t *md, int64_t n, int64_t c, int64_t h, int64_t w) {
    dnnl_dims_t d = {n, c, h, w};
    const int layouts[3] = {OT_LAYOUT_NCHW, OT_LAYOUT_16C, OT_LAYOUT_8C};
    for (int i = 0; i < 3; i++) {
        dnnl_memory_desc_t t;
        if (dnnl_memory_desc_init_by_tag(&t, 4, d, dnnl_f32, ot_layout_tag(layouts[i])) != dnnl_success) continue;
        if (dnnl_memory_desc_equal(&t, md)) return layouts[i];
    }
    return OT_LAYOUT_OTHER;
}

/// A convolution primitive and what a run needs to know of it.
typedef struct {
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t weights;  // the weight layout it reads (packed by ot_conv_pack_weights)
    int src_layout, dst_layout;  // OT_LAYOUT_*
    size_t src_bytes, dst_bytes;  // of its source and destination in those layouts
    size_t scratchpad;           // bytes of scratch memory a run takes (its own, per thread)
    int avx512;                  // 1 when the implementation is one of oneDNN's AVX-512 kernels
} ot_conv_t;

/// The algorithms asked for: direct, or Winograd (oneDNN's F(2x2, 3x3) / F(4x4, 3x3) AVX-512
/// kernels: 3x3 unit-stride, dense, group 1, blocked source and destination; refused elsewhere).
static const int OT_CONV_DIRECT = 0, OT_CONV_WINOGRAD = 1;

/// The primitive for y[n, o, oh, ow] = conv(x[n, c, h, w], weights [groups, o/groups, c/groups, kh, kw]) (+ bias[o]),
/// dilations as ONNX gives them (1: dense), source and destination in the layouts asked for
/// (OT_LAYOUT_OTHER: oneDNN's choice), the weight's layout oneDNN's choice, the algorithm
/// OT_CONV_DIRECT or OT_CONV_WINOGRAD. 0 on success.
static inline int ot_conv_create(dnnl_engine_t engine, int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t groups,
                                 int64_t kh, int64_t kw, int64_t oh, int64_t ow, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                                 int64_t pt, int64_t pl, int64_t pb, int64_t pr, int bias, int src_layout, int dst_layout, int algorithm,
                                 ot_conv_t *out) {
    memset(out, 0, sizeof *out);
    out->src_layout = out->dst_layout = OT_LAYOUT_OTHER;
    ot_dnnl_single_thread();  // the primitive plans its work for the threads it will run on
    dnnl_dims_t sd = {n, c, h, w}, dd = {n, o, oh, ow}, bd = {o};
    dnnl_dims_t strides = {sh, sw}, dil = {dh - 1, dw - 1}, padl = {pt, pl}, padr = {pb, pr};
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    dnnl_format_tag_t st = src_layout == OT_LAYOUT_OTHER ? dnnl_format_tag_any : ot_layout_tag(src_layout);
    dnnl_format_tag_t dt = dst_layout == OT_LAYOUT_OTHER ? dnnl_format_tag_any : ot_layout_tag(dst_layout);
    if (dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, st) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, dt) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a) != dnnl_success) return -1;
    if (groups > 1) {
        dnnl_dims_t wd = {groups, o / groups, c / groups, kh, kw};
        if (dnnl_memory_desc_init_by_tag(&wmd, 5, wd, dnnl_f32, dnnl_format_tag_any) != dnnl_success) return -1;
    } else {
        dnnl_dims_t wd = {o, c, kh, kw};
        if (dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any) != dnnl_success) return -1;
    }
    dnnl_convolution_desc_t desc;
    if (dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference,
                                                   algorithm == OT_CONV_WINOGRAD ? dnnl_convolution_winograd : dnnl_convolution_direct, &smd, &wmd,
                                                   bias ? &bmd : NULL, &dmd, strides, dil, padl, padr) != dnnl_success) return -1;
    dnnl_primitive_attr_t attr;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return -1;
    dnnl_primitive_desc_t pd;
    dnnl_status_t made = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (made == dnnl_success) made = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (made != dnnl_success) return -1;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        out->avx512 = strstr(impl, "avx512") != NULL;
    const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (scratch) out->scratchpad = dnnl_memory_desc_get_size(scratch);
    const dnnl_memory_desc_t *qs = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *qw = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *qd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    if (!qs || !qw || !qd) { dnnl_primitive_desc_destroy(pd); return -1; }
    out->weights = *qw;
    out->src_layout = ot_layout_of(qs, n, c, h, w);
    out->dst_layout = ot_layout_of(qd, n, o, oh, ow);
    out->src_bytes = dnnl_memory_desc_get_size(qs);
    out->dst_bytes = dnnl_memory_desc_get_size(qd);
    dnnl_status_t status = dnnl_primitive_create(&out->primitive, pd);
    dnnl_primitive_desc_destroy(pd);
    if (status != dnnl_success) { out->primitive = NULL; return -1; }
    return 0;
}

/// The weight [groups, o/groups, c/groups, kh, kw] (dense, as ONNX stores it) reordered into a
/// new memory of layout *weights (oneDNN allocates it); NULL on failure.
static inline dnnl_memory_t ot_conv_pack_weights(dnnl_engine_t engine, const float *weights, int64_t o, int64_t c, int64_t groups,
                                                 int64_t kh, int64_t kw, const dnnl_memory_desc_t *layout) {
    dnnl_memory_desc_t plain;
    if (groups > 1) {
        dnnl_dims_t d = {groups, o / groups, c / groups, kh, kw};
        if (dnnl_memory_desc_init_by_tag(&plain, 5, d, dnnl_f32, dnnl_goihw) != dnnl_success) return NULL;
    } else {
        dnnl_dims_t d = {o, c, kh, kw};
        if (dnnl_memory_desc_init_by_tag(&plain, 4, d, dnnl_f32, dnnl_oihw) != dnnl_success) return NULL;
    }
    return ot_reorder_new(engine, &plain, weights, layout);
}

/// The reorder of an [n, c, h, w] tensor from one handled layout to another; NULL on failure.
static inline dnnl_primitive_t ot_layout_reorder_create(dnnl_engine_t engine, int64_t n, int64_t c, int64_t h, int64_t w, int from, int to) {
    dnnl_dims_t d = {n, c, h, w};
    dnnl_memory_desc_t a, b;
    if (dnnl_memory_desc_init_by_tag(&a, 4, d, dnnl_f32, ot_layout_tag(from)) != dnnl_success) return NULL;
    if (dnnl_memory_desc_init_by_tag(&b, 4, d, dnnl_f32, ot_layout_tag(to)) != dnnl_success) return NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t reorder = NULL;
    ot_dnnl_single_thread();
    if (dnnl_reorder_primitive_desc_create(&pd, &a, engine, &b, engine, NULL) != dnnl_success) return NULL;
    if (dnnl_primitive_create(&reorder, pd) != dnnl_success) reorder = NULL;
    dnnl_primitive_desc_destroy(pd);
    return reorder;
}

/// The calling thread's state (shim.h) for the convolutions and reorders below, apart from the
/// matmul's (their memory objects' layouts differ).
static inline ot_thread_state *ot_conv_thread(dnnl_engine_t engine) {
    static __thread ot_thread_state state;
    return ot_thread_ready(&state, engine);
}

/// Runs a reorder from ot_layout_reorder_create on the calling thread. 0 on success.
static inline int ot_layout_reorder_run(dnnl_engine_t engine, dnnl_primitive_t reorder, int64_t n, int64_t c, int64_t h, int64_t w,
                                        int from, const float *source, int to, float *destination) {
    ot_thread_state *t = ot_conv_thread(engine);
    if (!t) return -1;
    dnnl_dims_t d = {n, c, h, w};
    dnnl_memory_desc_t a, b;
    if (dnnl_memory_desc_init_by_tag(&a, 4, d, dnnl_f32, ot_layout_tag(from)) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_tag(&b, 4, d, dnnl_f32, ot_layout_tag(to)) != dnnl_success) return -1;
    dnnl_memory_t am = ot_kept(&t->source, engine, &a, (void *)source);
    dnnl_memory_t bm = am ? ot_kept(&t->destination, engine, &b, destination) : NULL;
    if (!am || !bm) return -1;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, am}, {DNNL_ARG_TO, bm}};
    return ot_execute(reorder, t->stream, 2, args);
}

/// Runs a convolution from ot_conv_create on the calling thread: source and destination in its
/// layouts (conv->src_layout, dst_layout) at the given addresses, weights packed, bias or NULL,
/// scratch memory the thread's own. 0 on success.
static inline int ot_conv_run(dnnl_engine_t engine, const ot_conv_t *conv, int64_t n, int64_t c, int64_t h, int64_t w, const float *source,
                              dnnl_memory_t weights, const float *bias, int64_t o, int64_t oh, int64_t ow, float *destination) {
    ot_thread_state *t = ot_conv_thread(engine);
    if (!t) return -1;
    dnnl_dims_t sd = {n, c, h, w}, dd = {n, o, oh, ow}, bd = {o};
    dnnl_memory_desc_t smd, dmd, bmd;
    if (dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, ot_layout_tag(conv->src_layout)) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, ot_layout_tag(conv->dst_layout)) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a) != dnnl_success) return -1;
    dnnl_memory_t sm = ot_kept(&t->source, engine, &smd, (void *)source);
    dnnl_memory_t dm = sm ? ot_kept(&t->destination, engine, &dmd, destination) : NULL;
    dnnl_memory_t bm = bias && dm ? ot_kept(&t->bias, engine, &bmd, (void *)bias) : NULL;
    dnnl_memory_t spm = conv->scratchpad && dm ? ot_thread_scratch(t, engine, conv->scratchpad) : NULL;
    if (!sm || !dm || (bias && !bm) || (conv->scratchpad && !spm)) return -1;
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dm}};
    int count = 3;
    if (spm) args[count++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, spm};
    if (bm) args[count++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bm};
    return ot_execute(conv->primitive, t->stream, count, args);
}
