# cython: language_level=3
"""Little-endian integers read from and written to byte buffers: the key-value protocol's
(and its snapshot's) byte order, whatever the machine's. Inline, for the kv kernels to cimport."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef inline uint16_t u16(const uint8_t* p) noexcept nogil:
    return <uint16_t>p[0] | (<uint16_t>p[1] << 8)


cdef inline uint32_t u32(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t u64(const uint8_t* p) noexcept nogil:
    return <uint64_t>u32(p) | (<uint64_t>u32(p + 4) << 32)


cdef inline void put_u32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


cdef inline void put_u64(uint8_t* p, uint64_t v) noexcept nogil:
    put_u32(p, <uint32_t>v)
    put_u32(p + 4, <uint32_t>(v >> 32))
