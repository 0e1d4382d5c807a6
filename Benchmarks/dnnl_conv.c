// oneDNN's convolution (inference, bias, weights reordered once) on ResNet-18's 7x7/2 stem (3->64,
// 224x224) and a 3x3/2 (64->128, 56x56) at batch 1 and 32: with nchw input and output as onnx-train
// stores them, and in oneDNN's blocked layouts (conv alone, and with the nchw reorders in and out).
//   cc -O2 -o dnnl_conv Benchmarks/dnnl_conv.c -ldnnl
//   OMP_NUM_THREADS=2 ./dnnl_conv
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <oneapi/dnnl/dnnl.h>
#define CHECK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { fprintf(stderr, "%s failed %d line %d\n", #x, s_, __LINE__); exit(1);} } while(0)
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9;}
static void fill(float*p,size_t n){for(size_t i=0;i<n;i++)p[i]=(float)((rand()%2001)-1000)/1000.0f;}
// mode 0: src/dst nchw (plain), weights any; mode 1: src/dst any (blocked), timing only the conv
static void run(dnnl_engine_t eng, dnnl_stream_t s, int N,int C,int H,int W,int O,int KH,int stride,int pad,int mode){
  int OH=(H+2*pad-KH)/stride+1, OW=OH;
  dnnl_dims_t sd={N,C,H,W}, wd={O,C,KH,KH}, bd={O}, dd={N,O,OH,OW}, st={stride,stride}, pl={pad,pad}, pr={pad,pad};
  dnnl_memory_desc_t smd,wmd,bmd,dmd,splain,wplain,dplain;
  CHECK(dnnl_memory_desc_init_by_tag(&splain,4,sd,dnnl_f32,dnnl_nchw));
  CHECK(dnnl_memory_desc_init_by_tag(&dplain,4,dd,dnnl_f32,dnnl_nchw));
  CHECK(dnnl_memory_desc_init_by_tag(&wplain,4,wd,dnnl_f32,dnnl_oihw));
  CHECK(dnnl_memory_desc_init_by_tag(&smd,4,sd,dnnl_f32,mode?dnnl_format_tag_any:dnnl_nchw));
  CHECK(dnnl_memory_desc_init_by_tag(&dmd,4,dd,dnnl_f32,mode?dnnl_format_tag_any:dnnl_nchw));
  CHECK(dnnl_memory_desc_init_by_tag(&wmd,4,wd,dnnl_f32,dnnl_format_tag_any));
  CHECK(dnnl_memory_desc_init_by_tag(&bmd,1,bd,dnnl_f32,dnnl_a));
  dnnl_convolution_desc_t cd; CHECK(dnnl_convolution_forward_desc_init(&cd,dnnl_forward_inference,dnnl_convolution_direct,&smd,&wmd,&bmd,&dmd,st,pl,pr));
  dnnl_primitive_desc_t pd; CHECK(dnnl_primitive_desc_create(&pd,&cd,NULL,eng,NULL));
  const char*impl; dnnl_primitive_desc_query(pd,dnnl_query_impl_info_str,0,&impl);
  const dnnl_memory_desc_t *qs=dnnl_primitive_desc_query_md(pd,dnnl_query_src_md,0),*qw=dnnl_primitive_desc_query_md(pd,dnnl_query_weights_md,0),*qd=dnnl_primitive_desc_query_md(pd,dnnl_query_dst_md,0);
  dnnl_memory_t sm,wm,bm,dm,wp,sp,dp;
  CHECK(dnnl_memory_create(&sm,qs,eng,DNNL_MEMORY_ALLOCATE)); CHECK(dnnl_memory_create(&wm,qw,eng,DNNL_MEMORY_ALLOCATE));
  CHECK(dnnl_memory_create(&bm,&bmd,eng,DNNL_MEMORY_ALLOCATE)); CHECK(dnnl_memory_create(&dm,qd,eng,DNNL_MEMORY_ALLOCATE));
  CHECK(dnnl_memory_create(&sp,&splain,eng,DNNL_MEMORY_ALLOCATE)); CHECK(dnnl_memory_create(&dp,&dplain,eng,DNNL_MEMORY_ALLOCATE));
  void*h; dnnl_memory_get_data_handle(sp,&h); fill(h,(size_t)N*C*H*W);
  dnnl_memory_get_data_handle(bm,&h); fill(h,O);
  dnnl_memory_get_data_handle(wm,&h); fill(h,dnnl_memory_desc_get_size(qw)/4);
  // reorders for plain<->blocked (mode 1 measures them too)
  dnnl_primitive_desc_t r1pd,r2pd; dnnl_primitive_t r1=0,r2=0;
  if(mode){ CHECK(dnnl_reorder_primitive_desc_create(&r1pd,&splain,eng,qs,eng,NULL)); CHECK(dnnl_primitive_create(&r1,r1pd));
            CHECK(dnnl_reorder_primitive_desc_create(&r2pd,qd,eng,&dplain,eng,NULL)); CHECK(dnnl_primitive_create(&r2,r2pd)); }
  dnnl_primitive_t p; CHECK(dnnl_primitive_create(&p,pd));
  dnnl_exec_arg_t a[4]={{DNNL_ARG_SRC,sm},{DNNL_ARG_WEIGHTS,wm},{DNNL_ARG_BIAS,bm},{DNNL_ARG_DST,dm}};
  dnnl_exec_arg_t ra1[2]={{DNNL_ARG_FROM,sp},{DNNL_ARG_TO,sm}}, ra2[2]={{DNNL_ARG_FROM,dm},{DNNL_ARG_TO,dp}};
  double flops=2.0*N*O*OH*OW*C*KH*KH; int reps=(int)(3e9/flops); if(reps<3)reps=3; if(reps>200)reps=200;
  double best=1e9,bestr=1e9;
  for(int r=0;r<reps;r++){
    double t0=now(); if(mode) {CHECK(dnnl_primitive_execute(r1,s,2,ra1));}
    double t1=now(); CHECK(dnnl_primitive_execute(p,s,4,a)); CHECK(dnnl_stream_wait(s));
    double t2=now(); if(mode) {CHECK(dnnl_primitive_execute(r2,s,2,ra2)); CHECK(dnnl_stream_wait(s));}
    double t3=now(); if(t2-t1<best)best=t2-t1; if(t3-t0<bestr)bestr=t3-t0;}
  printf("N=%-2d %dx%dx%d -> %d k%d s%d  %s: conv %.3f ms (%.0f GF/s)%s", N,C,H,W,O,KH,stride, mode?"blocked":"nchw   ", best*1e3, flops/best*1e-9, mode?"":"\n");
  if(mode) printf(", with nchw reorders in/out %.3f ms  [%s]\n", bestr*1e3, impl); 
}
int main(){
  dnnl_engine_t eng; CHECK(dnnl_engine_create(&eng,dnnl_cpu,0)); dnnl_stream_t s; CHECK(dnnl_stream_create(&s,eng,dnnl_stream_default_flags));
  int Ns[]={1,32};
  for(int i=0;i<2;i++){ for(int m=0;m<2;m++){ run(eng,s,Ns[i],3,224,224,64,7,2,3,m); run(eng,s,Ns[i],64,56,56,128,3,2,1,m);} }
}
