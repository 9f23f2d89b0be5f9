/* Loads the link check DLL as R loads a package DLL (LoadLibrary, then
 * GetProcAddress), and calls it on a non-ASCII file name in the current
 * directory. Run under Wine by tools/windows-check.sh; exits 0 on success. */
#include <stdio.h>
#include <string.h>
#include <windows.h>

typedef int (*entry_fn)(const unsigned char *, size_t);

int main(void)
{
    /* "linkcheck-Grüße-模型.safetensors" in UTF-8. */
    const char *path = "linkcheck-Gr\xc3\xbc\xc3\x9f" "e-\xe6\xa8\xa1\xe5\x9e\x8b.safetensors";
    HMODULE dll = LoadLibraryA("safetensors_linkcheck.dll");
    if (dll == NULL) {
        fprintf(stderr, "LoadLibrary failed: error %lu\n", (unsigned long)GetLastError());
        return 2;
    }
    entry_fn entry = (entry_fn)(void (*)(void))GetProcAddress(dll, "linkcheck_entry");
    if (entry == NULL) {
        fprintf(stderr, "GetProcAddress failed: error %lu\n", (unsigned long)GetLastError());
        return 3;
    }
    int n = entry((const unsigned char *)path, strlen(path));
    printf("linkcheck_entry: %d tensor(s)\n", n);
    return n == 1 ? 0 : 1;
}
