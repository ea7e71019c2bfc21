//! `wndqn info`: what a bug report needs: wndqn and libtorch versions and where libtorch was
//! loaded from, whether libtorch sees CUDA, the GPUs (name, memory, from the NVIDIA driver),
//! cuDNN, CPU threads, the ALE version, the ROM folder and its games.

use crate::util::out;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;
use wndqn_envs::{ale, roms};

/// The folder of the libtorch this process loaded (from /proc/self/maps).
fn loaded_libtorch() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("/libtorch_cpu.so"))?;
    let path = Path::new(line.split_whitespace().last()?);
    Some(path.parent()?.parent()?.to_path_buf())
}

/// `__version__` from the torch package's `version.py`, next to its `lib/`.
fn torch_version(torch_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(torch_dir.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split(['\'', '"']).nth(1)?.to_string())
}

/// Name and total memory of each GPU, from the NVIDIA driver API (`libcuda.so.1`, loaded at run
/// time so that the binary has no link dependency on a driver). `Err` says why there are none.
fn gpus() -> Result<Vec<(String, u64)>, String> {
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Count = unsafe extern "C" fn(*mut i32) -> i32;
    type Get = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type Name = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    type Mem = unsafe extern "C" fn(*mut usize, i32) -> i32;
    // SAFETY: dlopen/dlsym of the driver library; each symbol is called with the C signature the
    // CUDA driver API documents for it.
    unsafe {
        let h = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            return Err("no NVIDIA driver (libcuda.so.1 not found)".into());
        }
        let sym = |n: &std::ffi::CStr| libc::dlsym(h, n.as_ptr());
        let (init, count, get, name, mem) = (
            sym(c"cuInit"),
            sym(c"cuDeviceGetCount"),
            sym(c"cuDeviceGet"),
            sym(c"cuDeviceGetName"),
            sym(c"cuDeviceTotalMem_v2"),
        );
        if [init, count, get, name, mem].iter().any(|p| p.is_null()) {
            return Err("libcuda.so.1 lacks the driver API".into());
        }
        let (init, count, get, name, mem): (Init, Count, Get, Name, Mem) = (
            std::mem::transmute::<*mut libc::c_void, Init>(init),
            std::mem::transmute::<*mut libc::c_void, Count>(count),
            std::mem::transmute::<*mut libc::c_void, Get>(get),
            std::mem::transmute::<*mut libc::c_void, Name>(name),
            std::mem::transmute::<*mut libc::c_void, Mem>(mem),
        );
        let rc = init(0);
        if rc != 0 {
            return Err(format!("cuInit failed with CUDA error {rc}"));
        }
        let mut n = 0;
        count(&mut n);
        let mut out = Vec::new();
        for i in 0..n {
            let mut dev = 0;
            get(&mut dev, i);
            let mut buf = [0 as std::ffi::c_char; 256];
            name(buf.as_mut_ptr(), buf.len() as i32, dev);
            let mut bytes = 0usize;
            mem(&mut bytes, dev);
            out.push((std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned(), bytes as u64));
        }
        Ok(out)
    }
}

/// Print the report (or JSON).
pub fn run(rom_dir: Option<&Path>, as_json: bool) -> Result<()> {
    let torch_dir = loaded_libtorch();
    let version = torch_dir.as_deref().and_then(torch_version).unwrap_or_else(|| "?".into());
    let cuda = tch::Cuda::is_available();
    let devices = tch::Cuda::device_count();
    let gpus = gpus();
    let threads = tch::get_num_threads();
    let cores = crate::threads::cores();
    let roms = roms::rom_dir(rom_dir);
    let games = roms.as_ref().map(|d| roms::available_games(d).len()).unwrap_or(0);
    let linked_cuda = std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("/libtorch_cuda.so"));
    if as_json {
        out!(
            "{}",
            json!({
                "wndqn": env!("CARGO_PKG_VERSION"), "libtorch": version, "libtorch_dir": torch_dir,
                "libtorch_cuda_loaded": linked_cuda, "cuda_available": cuda, "cuda_devices": devices,
                "gpus": gpus.as_ref().map(|g| g.iter().map(|(n, m)| json!({"name": n, "memory_bytes": m})).collect::<Vec<_>>()).unwrap_or_default(),
                "cudnn_available": tch::Cuda::cudnn_is_available(), "cuda_graph_shim": wndqn_agents::ext::CUDA_GRAPH_BUILT, "cpu_threads": threads, "cpu_cores": cores,
                "ale": ale::version(), "rom_dir": roms.as_ref().ok(), "games": games,
            })
        );
        return Ok(());
    }
    out!("wndqn       {}", env!("CARGO_PKG_VERSION"));
    out!("libtorch    {version} ({})", torch_dir.map_or("location unknown".into(), |d| d.display().to_string()));
    out!(
        "CUDA        {}",
        if cuda {
            format!("available, {devices} device(s)")
        } else if linked_cuda {
            "not available (libtorch_cuda is loaded; no usable GPU)".into()
        } else {
            "not available (this libtorch has no CUDA backend loaded)".into()
        }
    );
    match &gpus {
        Ok(g) if !g.is_empty() => {
            for (i, (name, mem)) in g.iter().enumerate() {
                out!("GPU {i}       {name}, {:.1} GiB", *mem as f64 / (1u64 << 30) as f64);
            }
        }
        Ok(_) => out!("GPU         none"),
        Err(why) => out!("GPU         none: {why}"),
    }
    out!("cuDNN       {}", if tch::Cuda::cudnn_is_available() { "available" } else { "not available" });
    out!(
        "CUDA graphs {}",
        if wndqn_agents::ext::CUDA_GRAPH_BUILT {
            "shim built (agents/csrc/cuda_graph.cpp)"
        } else {
            "not built (no CUDA headers at build time)"
        }
    );
    out!(
        "CPU         {}, {cores} cores; libtorch intra-op threads {threads}; native bf16: {}",
        crate::util::cpu_model(),
        if wndqn_agents::ext::precision::cpu_has_native_bf16() {
            "yes (learner.precision = \"bf16\" runs)"
        } else {
            "no (AVX512_BF16 or AMX-BF16 needed; learner.precision = \"bf16\" is refused)"
        }
    );
    out!("ALE         {}", ale::version());
    match &roms {
        Ok(d) => out!("ROMs        {} ({games} playable games)", d.display()),
        Err(e) => out!("ROMs        none: {e}"),
    }
    Ok(())
}
