//! An R embedded in a test process, for the binding crate's Rust tests
//! that call R's API (`robj.rs`). Test code only: it is compiled into the
//! tests, never into the package, and lives outside `src/` because it uses
//! R's embedding entry points, which are not part of the API a package
//! may call (`tools/check-nonapi.R` checks `src/`).

/// Starts R in this process, once per process; R then runs on the calling
/// thread, so the tests that use it run as one test.
pub fn start_r() {
    if std::env::var_os("R_HOME").is_none() {
        let out = std::process::Command::new("R")
            .arg("RHOME")
            .output()
            .expect("R on the PATH");
        std::env::set_var("R_HOME", String::from_utf8_lossy(&out.stdout).trim());
    }
    let mut args = [
        c"R".as_ptr() as *mut _,
        c"--slave".as_ptr() as *mut _,
        c"--no-save".as_ptr() as *mut _,
    ];
    // SAFETY: R's documented embedding sequence, once per process; the
    // arguments outlive the call. The stack limit is lifted because the
    // test harness runs this on a thread R didn't measure.
    unsafe {
        extendr_ffi::Rf_initialize_R(3, args.as_mut_ptr());
        extendr_ffi::R_CStackLimit = usize::MAX;
        extendr_ffi::setup_Rmainloop();
    }
}
