/*
 * A stand-in for Windows' bcryptprimitives.dll, for running the Rust test
 * executables of the core crate under Wine (tools/windows-check.sh).
 *
 * Rust's standard library (1.78 and later) imports ProcessPrng from
 * bcryptprimitives.dll to seed its hash maps; Windows 10 and later have it,
 * Wine 8 (Debian 12) does not, and an executable that imports a missing DLL
 * does not start. This one exports ProcessPrng and forwards it to
 * RtlGenRandom (exported by advapi32 as SystemFunction036), which Wine has.
 *
 * Test-only: the script builds it with x86_64-w64-mingw32-gcc into the build
 * directory next to the test executables. It is never committed as a binary
 * and never part of the R package.
 */
#include <windows.h>

/* RtlGenRandom, declared here rather than through <ntsecapi.h>. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Fills data[0..length) with random bytes; like the real one it only fails
 * if the system's generator does (which then never returns on Windows). */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x40000000u ? 0x40000000u : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
