# NCCL backend of Communicator (sharding/nccl_communicator.*), included by
# sharding/CMakeLists.txt when CUDA is enabled. Builds bitfleet_nccl when nccl.h and libnccl are
# found: in the CUDA toolkit (pip-style installs put them there), under $NCCL_HOME, or in the
# system paths. Other folders test `if(TARGET bitfleet_nccl)`.
find_path(BITFLEET_NCCL_INCLUDE_DIR nccl.h
  HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME PATH_SUFFIXES include)
find_library(BITFLEET_NCCL_LIBRARY NAMES nccl libnccl.so.2
  HINTS ${CUDAToolkit_LIBRARY_DIR} ENV NCCL_HOME PATH_SUFFIXES lib lib64)
if(BITFLEET_NCCL_INCLUDE_DIR AND BITFLEET_NCCL_LIBRARY)
  message(STATUS "bitfleet: NCCL communicator enabled (${BITFLEET_NCCL_LIBRARY})")
  bitfleet_library(bitfleet_nccl
    SRCS nccl_communicator.cc
    DEPS bitfleet_sharding bitfleet_kernels_cuda bitfleet_core CUDA::cudart_static ${BITFLEET_NCCL_LIBRARY})
  target_include_directories(bitfleet_nccl SYSTEM PRIVATE ${BITFLEET_NCCL_INCLUDE_DIR})
  target_compile_definitions(bitfleet_nccl PUBLIC BITFLEET_HAVE_NCCL=1)
else()
  message(STATUS "bitfleet: NCCL not found; no NCCL communicator")
endif()
