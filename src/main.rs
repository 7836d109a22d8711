fn main() {
    std::process::exit(medtrain::cli::run());
}
