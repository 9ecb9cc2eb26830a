//! What else the machine did in a step's window: the CPU time of each
//! process (by command name) and the API server's own latency per verb and
//! resource, so a slow reconcile can be told from a slow API server.

use std::collections::HashMap;

use shoal_tests::kube::ControlPlane;

/// Every process's command name and CPU time (user + system) in clock
/// ticks, keyed by pid and start time (a pid may be reused); and, under pid
/// 0, the machine's idle time and the time the hypervisor gave its cores to
/// others (`(idle)`, `(steal)`: a window that shares the host is slower for
/// everything in it).
pub fn cpu_ticks() -> HashMap<(u32, u64), (String, u64)> {
    let mut ticks = HashMap::new();
    if let Some(all) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
    {
        // cpu user nice system idle iowait irq softirq steal ...
        let fields: Vec<u64> = all
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        for (key, name, index) in [(0, "(idle)", 3), (1, "(steal)", 7)] {
            if let Some(t) = fields.get(index) {
                ticks.insert((0, key), (name.to_owned(), *t));
            }
        }
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return ticks;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ...: comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the comm comes field 3 of stat(5) (state): utime is field
        // 14, stime 15, starttime 22.
        let field = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(user), Some(system), Some(start)) = (field(14), field(15), field(22)) {
            ticks.insert((pid, start), (comm, user + system));
        }
    }
    ticks
}

/// The `top` command names by CPU seconds between two [`cpu_ticks`]
/// readings (a process started in between counts whole; one that ended
/// in between is not seen), as `name:seconds,...`.
pub fn cpu_spent(
    before: &HashMap<(u32, u64), (String, u64)>,
    after: &HashMap<(u32, u64), (String, u64)>,
    top: usize,
) -> String {
    let tick = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for (process, (name, t)) in after {
        let earlier = before.get(process).map_or(0, |(_, t)| *t);
        *by_name.entry(name).or_insert(0) += t.saturating_sub(earlier);
    }
    let mut spent: Vec<(&str, u64)> = by_name.into_iter().filter(|(_, t)| *t > 0).collect();
    spent.sort_by_key(|s| std::cmp::Reverse(s.1));
    spent
        .iter()
        .take(top)
        .map(|(name, t)| format!("{}:{:.1}", name.replace([' ', ','], "_"), *t as f64 / tick))
        .collect::<Vec<_>>()
        .join(",")
}

/// The API server's request-latency buckets that matter here: per
/// `verb/resource[/subresource]`, (answers within 100 ms, answers).
pub fn api_server_latency(plane: &ControlPlane) -> HashMap<String, (f64, f64)> {
    let text = plane.kubectl(&["get", "--raw", "/metrics"]);
    let mut by = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let le = label("le");
        if le != "0.1" && le != "+Inf" {
            continue;
        }
        let verb = label("verb");
        if matches!(verb.as_str(), "WATCH" | "CONNECT") {
            continue;
        }
        let mut key = format!("{verb}/{}", label("resource"));
        let sub = label("subresource");
        if !sub.is_empty() {
            key = format!("{key}/{sub}");
        }
        let count: f64 = value.trim().parse().unwrap_or(0.0);
        let entry = by.entry(key).or_insert((0.0, 0.0));
        if le == "0.1" {
            entry.0 += count;
        } else {
            entry.1 += count;
        }
    }
    by
}

/// The `top` request kinds with the most answers over 100 ms between two
/// [`api_server_latency`] readings, as `kind:slow/all,...`.
pub fn api_server_slow(
    before: &HashMap<String, (f64, f64)>,
    after: &HashMap<String, (f64, f64)>,
    top: usize,
) -> String {
    let mut slow: Vec<(&String, f64, f64)> = after
        .iter()
        .map(|(key, (fast, all))| {
            let (fast0, all0) = before.get(key).copied().unwrap_or((0.0, 0.0));
            (key, (all - all0) - (fast - fast0), all - all0)
        })
        .filter(|(_, _, all)| *all > 0.0)
        .collect();
    slow.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.total_cmp(&a.2)));
    slow.iter()
        .take(top)
        .map(|(key, s, all)| format!("{key}:{s}/{all}"))
        .collect::<Vec<_>>()
        .join(",")
}
