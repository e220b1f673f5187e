//! Every supported compose key, as the engine sees it (`docker inspect`).

use crate::support::*;
use std::process::Command;

#[test]
fn supported_keys_reach_the_engine() {
    let tb = testbed();
    let image = &tb.image;
    let port = 20000 + (std::process::id() % 20000);
    let repo = GitRepo::new("keys");
    repo.write("conf/app.conf", "setting=1\n");
    repo.write(
        "compose.yaml",
        &format!(
            r#"name: ${{PROJECT}}
services:
  app:
    image: {image}
    command: ["sleep", "100000"]
    environment: {{A: "1"}}
    labels: {{team: edge}}
    user: "1000:1000"
    working_dir: /tmp
    hostname: apphost
    domainname: example.org
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    read_only: true
    init: true
    tty: true
    stdin_open: true
    tmpfs: ["/run:size=1m"]
    ulimits: {{nofile: {{soft: 1024, hard: 2048}}}}
    sysctls: {{net.core.somaxconn: "1024"}}
    logging: {{driver: json-file, options: {{max-size: 1m}}}}
    stop_signal: SIGINT
    stop_grace_period: 3s
    extra_hosts: ["db.local:10.1.2.3"]
    dns: [1.1.1.1]
    dns_search: [example.org]
    shm_size: 32m
    security_opt: ["no-new-privileges:true"]
    mem_limit: 64m
    cpus: 0.5
    pids_limit: 50
    group_add: ["100"]
    devices: ["/dev/null:/dev/mynull:rwm"]
    restart: on-failure:3
    ports: ["127.0.0.1:{port}:80/tcp"]
    expose: ["9000"]
    volumes:
      - data:/data
      - ./conf/app.conf:/etc/app.conf:ro
      - {{type: tmpfs, target: /cache, tmpfs: {{size: 1m}}}}
    networks:
      front: {{aliases: [www], ipv4_address: 198.18.{net}.10}}
    healthcheck:
      test: ["CMD", "true"]
      interval: 5s
volumes:
  data: {{}}
networks:
  front:
    ipam: {{config: [{{subnet: 198.18.{net}.0/24}}]}}
"#,
            net = 100 + std::process::id() % 100
        ),
    );
    let agent = Agent::new(&repo.http_url(), "");
    // The project name comes from the layer's .env, through interpolation.
    let project = agent.project.clone();
    repo.write(".env", &format!("PROJECT={project}\n"));
    repo.commit("every key");
    agent.run_once_ok();
    let name = agent.container("app");
    let j: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new("docker").args(["inspect", &name])))
            .expect("json");
    let c = &j[0];
    let hc = &c["HostConfig"];
    let cfgj = &c["Config"];
    assert!(cfgj["Env"].to_string().contains("A=1"));
    assert_eq!(cfgj["Labels"]["team"], "edge");
    assert_eq!(
        cfgj["Labels"]["com.docker.compose.project"],
        project.as_str()
    );
    assert_eq!(cfgj["User"], "1000:1000");
    assert_eq!(cfgj["WorkingDir"], "/tmp");
    assert_eq!(cfgj["Hostname"], "apphost");
    assert_eq!(cfgj["Domainname"], "example.org");
    assert_eq!(cfgj["Tty"], true);
    assert_eq!(cfgj["OpenStdin"], true);
    assert_eq!(cfgj["StopSignal"], "SIGINT");
    assert_eq!(cfgj["StopTimeout"], 3);
    assert!(cfgj["ExposedPorts"].get("9000/tcp").is_some());
    assert_eq!(cfgj["Healthcheck"]["Interval"], 5_000_000_000i64);
    assert_eq!(hc["CapAdd"][0], "NET_ADMIN");
    assert_eq!(hc["CapDrop"][0], "MKNOD");
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["Init"], true);
    assert!(hc["Tmpfs"]["/run"]
        .as_str()
        .is_some_and(|o| o.contains("size=1m")));
    assert_eq!(hc["Ulimits"][0]["Name"], "nofile");
    assert_eq!(hc["Ulimits"][0]["Hard"], 2048);
    assert_eq!(hc["Sysctls"]["net.core.somaxconn"], "1024");
    assert_eq!(hc["LogConfig"]["Type"], "json-file");
    assert_eq!(hc["LogConfig"]["Config"]["max-size"], "1m");
    assert_eq!(hc["ExtraHosts"][0], "db.local:10.1.2.3");
    assert_eq!(hc["Dns"][0], "1.1.1.1");
    assert_eq!(hc["DnsSearch"][0], "example.org");
    assert_eq!(hc["ShmSize"], 32 << 20);
    assert_eq!(hc["SecurityOpt"][0], "no-new-privileges:true");
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["PidsLimit"], 50);
    assert_eq!(hc["GroupAdd"][0], "100");
    assert_eq!(hc["Devices"][0]["PathInContainer"], "/dev/mynull");
    assert_eq!(hc["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(hc["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(
        hc["PortBindings"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );
    assert_eq!(hc["PortBindings"]["80/tcp"][0]["HostIp"], "127.0.0.1");
    let mounts = c["Mounts"].to_string();
    assert!(mounts.contains(&format!("{project}_data")), "{mounts}");
    assert!(
        mounts.contains("/etc/app.conf") && mounts.contains("/files/"),
        "{mounts}"
    );
    let front = &c["NetworkSettings"]["Networks"][format!("{project}_front")];
    assert!(front["Aliases"].to_string().contains("www"), "{front}");
    assert!(
        front["IPAddress"]
            .as_str()
            .is_some_and(|ip| ip.ends_with(".10")),
        "{front}"
    );
    let conf = run_ok(Command::new("docker").args(["exec", &name, "cat", "/etc/app.conf"]));
    assert_eq!(conf, "setting=1\n");
}
