//! `libnftables` in-process (the library the `nft` tool is a thin wrapper around): the same
//! scripts, the same one-transaction-per-call semantics, without a process per apply, and with one
//! netlink socket for the agent's life. The socket matters: when a socket that deleted set
//! elements is closed, the kernel waits for an RCU grace period (10-25 ms measured here), which
//! `nft -f -` pays on every removal.
//!
//! Loaded with `dlopen("libnftables.so.1")` (Debian's nftables package ships no unversioned
//! development link), so no build-time dependency; [`LibNft::open`] fails cleanly when absent.

use super::nft::{nft_message, Error, Exchange};
use crate::nfnetlink::{Seq, Socket};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}

const RTLD_NOW: c_int = 2;
const LIBRARY: &str = "libnftables.so.1";

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxStr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type GetFlags = unsafe extern "C" fn(*mut c_void) -> u32;
type SetFlags = unsafe extern "C" fn(*mut c_void, u32);

/// libnftables' output flags (`NFT_CTX_OUTPUT_JSON`, `NFT_CTX_OUTPUT_TERSE`).
const OUTPUT_JSON: u32 = 1 << 4;
const OUTPUT_TERSE: u32 = 1 << 11;

struct Api {
    ctx_free: CtxFree,
    get_output: CtxStr,
    get_error: CtxStr,
    run: RunCmd,
    get_flags: GetFlags,
    set_flags: SetFlags,
}

struct Ctx {
    api: Api,
    ctx: *mut c_void,
}

// SAFETY: the context is only used behind the Mutex in `LibNft`, one call at a time.
unsafe impl Send for Ctx {}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: ctx came from nft_ctx_new and is freed once.
        unsafe { (self.api.ctx_free)(self.ctx) }
    }
}

/// An nftables context of the calling thread's network namespace at [`LibNft::open`], and an
/// nfnetlink socket of the same namespace for what libnftables does slowly.
pub struct LibNft {
    inner: Mutex<Ctx>,
    netlink: Mutex<Option<(Socket, Seq)>>,
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    unsafe {
        let e = dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

unsafe fn symbol<T>(lib: *mut c_void, name: &str) -> Result<T, Error> {
    let cname = CString::new(name).expect("symbol name");
    let p = dlsym(lib, cname.as_ptr());
    if p.is_null() {
        return Err(Error::Library(format!(
            "{LIBRARY}: symbol {name}: {}",
            last_dl_error()
        )));
    }
    // SAFETY: the caller names the symbol's true function type; fn pointers and *mut c_void
    // have the same size on every platform netman runs on.
    Ok(std::mem::transmute_copy::<*mut c_void, T>(&p))
}

fn take(f: CtxStr, ctx: *mut c_void) -> String {
    // SAFETY: libnftables returns a NUL-terminated buffer it owns (or NULL) and rewinds it.
    unsafe {
        let p = f(ctx);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

impl LibNft {
    pub fn open() -> Result<LibNft, Error> {
        let name = CString::new(LIBRARY).expect("library name");
        // SAFETY: plain dlopen/dlsym of a C library; the handle is never closed (it lives as
        // long as the process), so the function pointers stay valid.
        unsafe {
            let lib = dlopen(name.as_ptr(), RTLD_NOW);
            if lib.is_null() {
                return Err(Error::Library(format!(
                    "loading {LIBRARY}: {}",
                    last_dl_error()
                )));
            }
            let ctx_new: CtxNew = symbol(lib, "nft_ctx_new")?;
            let buffer_output: CtxInt = symbol(lib, "nft_ctx_buffer_output")?;
            let buffer_error: CtxInt = symbol(lib, "nft_ctx_buffer_error")?;
            let api = Api {
                ctx_free: symbol(lib, "nft_ctx_free")?,
                get_output: symbol(lib, "nft_ctx_get_output_buffer")?,
                get_error: symbol(lib, "nft_ctx_get_error_buffer")?,
                run: symbol(lib, "nft_run_cmd_from_buffer")?,
                get_flags: symbol(lib, "nft_ctx_output_get_flags")?,
                set_flags: symbol(lib, "nft_ctx_output_set_flags")?,
            };
            let ctx = ctx_new(0);
            if ctx.is_null() {
                return Err(Error::Library(format!("{LIBRARY}: nft_ctx_new failed")));
            }
            let ctx = Ctx { api, ctx };
            if buffer_output(ctx.ctx) != 0 || buffer_error(ctx.ctx) != 0 {
                return Err(Error::Library(format!("{LIBRARY}: cannot buffer output")));
            }
            let netlink = match Socket::open() {
                Ok(socket) => Some((socket, Seq::default())),
                Err(e) => {
                    log::warn!("no nfnetlink socket beside libnftables ({e}): the ASG table's first apply and check go the slow way");
                    None
                }
            };
            Ok(LibNft {
                inner: Mutex::new(ctx),
                netlink: Mutex::new(netlink),
            })
        }
    }

    /// Runs `exchange` on the socket opened with the context.
    pub fn with_netlink(&self, exchange: &mut Exchange) -> Result<(), Error> {
        let mut held = self.netlink.lock().unwrap_or_else(|e| e.into_inner());
        let Some((socket, seq)) = held.as_mut() else {
            return Err(Error::Library("no nfnetlink socket was opened".into()));
        };
        socket.drain();
        exchange(socket, seq).map_err(Error::Netlink)
    }

    /// Runs one script as one transaction (all of it or nothing).
    pub fn run(&self, script: &str) -> Result<(), Error> {
        self.run_with(script, 0).map(|_| ())
    }

    /// nftables' JSON answer to one `list ...` command (`terse`: without set elements).
    pub fn list_json(&self, command: &str, terse: bool) -> Result<String, Error> {
        let flags = OUTPUT_JSON | if terse { OUTPUT_TERSE } else { 0 };
        self.run_with(command, flags).map_err(|e| match e {
            Error::Rejected { message, .. } => Error::Listing(format!("{command}: {message}")),
            other => other,
        })
    }

    /// nftables' text answer to a `list ...` command.
    pub fn run_listing(&self, command: &str) -> Result<String, Error> {
        self.run_with(command, 0)
    }

    /// Runs `script` with `flags` added to the context's output flags for this call only.
    fn run_with(&self, script: &str, flags: u32) -> Result<String, Error> {
        let script = CString::new(script).map_err(|_| Error::NulInScript)?;
        let ctx = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: ctx is valid; the script is NUL-terminated and outlives the call.
        let rc = unsafe {
            let before = (ctx.api.get_flags)(ctx.ctx);
            (ctx.api.set_flags)(ctx.ctx, before | flags);
            let rc = (ctx.api.run)(ctx.ctx, script.as_ptr());
            (ctx.api.set_flags)(ctx.ctx, before);
            rc
        };
        let out = take(ctx.api.get_output, ctx.ctx);
        let err = take(ctx.api.get_error, ctx.ctx);
        if rc != 0 {
            return Err(Error::Rejected {
                status: None,
                message: nft_message(&err),
            });
        }
        Ok(out)
    }
}
