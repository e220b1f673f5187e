//! Hooks and metrics from `tend run --once` on this machine: each outcome reaches the hook
//! command (with the step that refused), and the node_exporter textfile follows the state.

use crate::support::*;

fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

#[test]
fn outcomes_reach_the_hook_command_and_the_textfile_follows() {
    let repo = GitRepo::new("obs");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    let first = repo.commit("two services");
    let agent = Agent::new(&repo.http_url(), "");
    let log = agent.dir.path().join("events.jsonl");
    let prom = agent.dir.path().join("tend.prom");
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        format!(
            "{cfg}[metrics]\ntextfile = \"{}\"\n[hooks]\ncommand = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\n\
             on = [\"applied\", \"refused\"]\n",
            prom.display(),
            log.display()
        ),
    )
    .expect("config");

    agent.run_once_ok();
    let got = events(&log);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["outcome"], "applied");
    assert_eq!(got[0]["revision"], first.as_str());
    assert_eq!(got[0]["host"], "edge-1");
    let text = std::fs::read_to_string(&prom).expect("textfile written");
    assert!(
        text.contains(&format!(
            "tend_applied_revision_info{{revision=\"{first}\",short=\"{}\"}} 1",
            &first[..7]
        )),
        "{text}"
    );
    assert!(
        text.contains("tend_resources{kind=\"container\",state=\"running\"} 2"),
        "{text}"
    );

    // A no-op cycle publishes nothing; a refused revision is published with its step.
    agent.run_once_ok();
    assert_eq!(events(&log).len(), 1);
    repo.write(
        "compose.yaml",
        "services:\n  web:\n    image: x\n    build: .\n",
    );
    let bad = repo.commit("broken");
    assert!(!agent.run_once().status.success());
    let got = events(&log);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["outcome"], "refused");
    assert_eq!(got[1]["revision"], bad.as_str());
    assert_eq!(got[1]["step"], "load");
    let text = std::fs::read_to_string(&prom).expect("textfile");
    assert!(
        text.contains(&format!(
            "tend_refused_revision_info{{revision=\"{bad}\",step=\"load\"}} 1"
        )),
        "{text}"
    );
    // A refused tip is not published again on the next poll.
    assert!(!agent.run_once().status.success());
    assert_eq!(events(&log).len(), 2);
}
