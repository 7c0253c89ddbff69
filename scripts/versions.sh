# Tool versions every machine builds with. Cargo.lock pins the crates (and so wasm-bindgen's
# version), package-lock.json the npm packages; these are the CLIs installed with cargo.
WORKER_BUILD_VERSION=0.8.7
NODE_MIN=20.3
