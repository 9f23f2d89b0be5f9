/* The C side of the link check DLL (tools/windows-check.sh), in the role of
 * src/entrypoint.c: it refers to the Rust entry point, so that the linker
 * pulls the static library in, and is the one symbol the DLL exports
 * (dll.def, like src/safetensors-win.def). */
#include <stddef.h>

int safetensors_linkcheck(const unsigned char *path, size_t len);

int linkcheck_entry(const unsigned char *path, size_t len)
{
    return safetensors_linkcheck(path, len);
}
