//! The `/init` of a Phase Boot initramfs. All the work is in the library.

fn main() {
    phase_init::pid1::main()
}
