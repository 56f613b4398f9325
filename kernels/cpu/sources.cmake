# Sources of the CPU kernels and their scalar references (owner: kernels/cpu), included by
# kernels/CMakeLists.txt into bitfleet_kernels. Sets BITFLEET_KERNELS_CPU_SRCS.
#
# Runtime dispatch (docs/kernels.md): each SIMD variant is compiled with its own ISA flags, per
# file; everything else stays baseline x86-64, and dispatch.cc picks a variant at start-up with
# __builtin_cpu_supports. Never build the library with -march=native.

set(BITFLEET_KERNELS_CPU_SRCS
  ref/matmul_ref.cc
  ref/ops_ref.cc
  cpu/dispatch.cc
  cpu/kernels_scalar.cc
  cpu/matmul_cpu.cc
  cpu/ops_cpu.cc
  cpu/packed_weight.cc
)
# References: no FMA contraction, so they give the same bits with any compiler flags.
set_source_files_properties(ref/matmul_ref.cc ref/ops_ref.cc cpu/kernels_scalar.cc
  PROPERTIES COMPILE_OPTIONS -ffp-contract=off)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(BITFLEET_KERNELS_AVX2_SRCS cpu/avx2_matmul.cc cpu/avx2_ops.cc)
  # GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* (GCC bug
  # 105593, fixed in 13).
  set(BITFLEET_AVX512_NOWARN -Wno-uninitialized -Wno-maybe-uninitialized)
  set(BITFLEET_KERNELS_AVX512_SRCS cpu/avx512_matmul.cc cpu/avx512_panel_matmul.cc cpu/avx512_ops.cc
    cpu/avx512_attention.cc)
  set_source_files_properties(${BITFLEET_KERNELS_AVX2_SRCS}
    PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set(BITFLEET_AVX512_FLAGS -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c)
  set_source_files_properties(${BITFLEET_KERNELS_AVX512_SRCS}
    PROPERTIES COMPILE_OPTIONS "${BITFLEET_AVX512_FLAGS};${BITFLEET_AVX512_NOWARN}")
  # AMX batch matmuls: the AVX-512 flags plus the tile instructions (GCC >= 11).
  set_source_files_properties(cpu/amx_matmul.cc
    PROPERTIES COMPILE_OPTIONS "${BITFLEET_AVX512_FLAGS};-mamx-tile;-mamx-int8;${BITFLEET_AVX512_NOWARN}")
  set_source_files_properties(cpu/dispatch.cc cpu/amx_matmul.cc PROPERTIES COMPILE_DEFINITIONS BITFLEET_KERNELS_X86=1)
  list(APPEND BITFLEET_KERNELS_CPU_SRCS ${BITFLEET_KERNELS_AVX2_SRCS} ${BITFLEET_KERNELS_AVX512_SRCS}
    cpu/amx_matmul.cc)
endif()
