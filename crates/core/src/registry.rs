//! How the command line finds domains: one [`DomainEntry`] per domain, listed once by the
//! binary (`static DOMAINS: &[&dyn DomainEntry] = &[&Entry::<Toy>::NEW, ...]`). An entry
//! runs the shared commands (train, sample, eval, bench) for its domain and carries the
//! domain's own subcommands ([`crate::domain::Domain::command`]).

use crate::domain::{Domain, Evaluation};
use crate::run::{self, BenchResult, SampleRequest, TrainOptions};
use crate::train::TrainReport;
use candle_core::Device;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// A domain as the command line sees it, without its types.
pub trait DomainEntry: Sync {
    /// The domain's name (`domain = "..."` in experiment files).
    fn name(&self) -> &'static str;
    /// `sugarcube train`.
    fn train(
        &self,
        experiment: &Path,
        opts: &TrainOptions,
        device: &Device,
    ) -> anyhow::Result<(PathBuf, TrainReport)>;
    /// `sugarcube sample`.
    fn sample(
        &self,
        run_dir: &Path,
        req: &SampleRequest,
        device: &Device,
    ) -> anyhow::Result<(PathBuf, Vec<PathBuf>)>;
    /// `sugarcube eval`.
    fn eval(
        &self,
        run_dir: &Path,
        req: &SampleRequest,
        device: &Device,
    ) -> anyhow::Result<Evaluation>;
    /// `sugarcube bench EXPERIMENT`.
    fn bench(
        &self,
        experiment: &Path,
        steps: usize,
        n: usize,
        device: &Device,
    ) -> anyhow::Result<Vec<BenchResult>>;
    /// The domain's sections of the report of the run in `run` ([`crate::report`]).
    fn report(&self, run: &crate::report::RunFiles) -> anyhow::Result<Vec<crate::report::Section>>;
    /// The domain's own bench workloads ([`crate::domain::Domain::workloads`]).
    fn workloads(&self) -> Vec<crate::bench::DomainWorkload>;
    /// The domain's own subcommands, mounted as `sugarcube NAME ...`.
    fn command(&self) -> Option<clap::Command>;
    /// Runs one of them.
    fn run_command(&self, matches: &clap::ArgMatches) -> anyhow::Result<()>;
}

/// The registry entry of domain `D`.
pub struct Entry<D>(PhantomData<fn() -> D>);

impl<D: Domain> Entry<D> {
    /// The entry (a constant, for the binary's static list).
    pub const NEW: Self = Entry(PhantomData);
}

impl<D: Domain> DomainEntry for Entry<D> {
    fn name(&self) -> &'static str {
        D::NAME
    }
    fn train(
        &self,
        experiment: &Path,
        opts: &TrainOptions,
        device: &Device,
    ) -> anyhow::Result<(PathBuf, TrainReport)> {
        run::train::<D>(experiment, opts, device)
    }
    fn sample(
        &self,
        run_dir: &Path,
        req: &SampleRequest,
        device: &Device,
    ) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
        run::sample::<D>(run_dir, req, device)
    }
    fn eval(
        &self,
        run_dir: &Path,
        req: &SampleRequest,
        device: &Device,
    ) -> anyhow::Result<Evaluation> {
        run::eval::<D>(run_dir, req, device)
    }
    fn bench(
        &self,
        experiment: &Path,
        steps: usize,
        n: usize,
        device: &Device,
    ) -> anyhow::Result<Vec<BenchResult>> {
        run::bench::<D>(experiment, steps, n, device)
    }
    fn report(&self, run: &crate::report::RunFiles) -> anyhow::Result<Vec<crate::report::Section>> {
        crate::report::domain_sections::<D>(run)
    }
    fn workloads(&self) -> Vec<crate::bench::DomainWorkload> {
        D::workloads()
    }
    fn command(&self) -> Option<clap::Command> {
        D::command().map(|c| c.name(D::NAME))
    }
    fn run_command(&self, matches: &clap::ArgMatches) -> anyhow::Result<()> {
        D::run_command(matches)
    }
}

/// The entry called `name` in `domains`, or an error naming `origin` and listing the names.
pub fn find<'a>(
    domains: &[&'a dyn DomainEntry],
    name: &str,
    origin: &str,
) -> anyhow::Result<&'a dyn DomainEntry> {
    domains
        .iter()
        .copied()
        .find(|d| d.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = domains.iter().map(|d| d.name()).collect();
            anyhow::anyhow!(
                "{origin}: unknown domain `{name}`: expected one of {}",
                names.join(", ")
            )
        })
}
