//! Integration tests: the fake API server driven by the real kube-rs client, and the fixtures.

mod fake_kube;
mod fixtures;
mod remediation;

use canopy_testkit::{FakeKube, Fixture};

/// A kube client pointed at `kube`.
pub fn client(kube: &FakeKube) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(kube::Config::new(
        kube.url().parse()?,
    ))?)
}

/// A fake server serving the checked-in fixture `name`, and a client for it.
pub async fn serve(name: &str) -> anyhow::Result<(FakeKube, kube::Client, Fixture)> {
    let fixture = Fixture::load(name)?;
    let kube = FakeKube::start(fixture.clone()).await?;
    let client = client(&kube)?;
    Ok((kube, client, fixture))
}
