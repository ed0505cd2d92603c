//! `eci-profile completion SHELL`: a shell completion script.

use std::process::ExitCode;

use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
#[command(after_help = "Load it, for example:\n  \
    bash: source <(eci-profile completion bash)\n  \
    zsh:  eci-profile completion zsh > \"${fpath[1]}/_eci-profile\"\n  \
    fish: eci-profile completion fish > ~/.config/fish/completions/eci-profile.fish")]
pub struct CompletionArgs {
    /// The shell to complete in
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the completion script of `command` for the shell asked to stdout.
pub fn run(args: CompletionArgs, command: &mut clap::Command) -> Result<ExitCode, String> {
    clap_complete::generate(args.shell, command, "eci-profile", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
