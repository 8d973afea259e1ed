//! What canopyctl says when things go wrong.

use canopy_testkit::free_port;

use crate::{run, stderr};

#[tokio::test]
async fn an_unreachable_api_is_named_with_a_hint() -> anyhow::Result<()> {
    let api = format!("http://127.0.0.1:{}", free_port());
    for args in [&["clusters", "list"][..], &["events", "watch"]] {
        let out = run(&api, args).await?;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("error: cannot reach the Canopy API at {api}: ")),
            "{err}"
        );
        assert!(err.contains("Connection refused"), "{err}");
        assert!(err.contains("`make demo`"), "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn usage_errors_exit_with_2() -> anyhow::Result<()> {
    let api = "http://127.0.0.1:9";
    for args in [
        &["events", "watch", "--from-seq", "1", "--since", "5m"][..],
        &["events", "watch", "--since", "last tuesday"],
        &["clusters", "get"],
        &["--output", "yaml", "clusters", "list"],
    ] {
        let out = run(api, args).await?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let out = run("not a url", &["clusters", "list"]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--api"), "{}", stderr(&out));
    Ok(())
}
