//! The plan as a graph: cycles and execution levels.

use super::*;

/// Returns one dependency cycle (`[a, b, a]`), starting at the earliest step.
pub fn find_cycle(steps: &[PlannedStep]) -> Option<Vec<String>> {
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(steps.len(), steps.len() * 2);
    let index: HashMap<&str, NodeIndex> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), graph.add_node(i)))
        .collect();
    for s in steps {
        let to = index[s.id.as_str()];
        for d in &s.depends_on {
            if let Some(&from) = index.get(d.as_str()) {
                graph.add_edge(from, to, ());
            }
        }
    }
    let mut best: Option<Vec<usize>> = None;
    for scc in tarjan_scc(&graph) {
        let is_cycle = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
        if !is_cycle {
            continue;
        }
        let members: HashSet<NodeIndex> = scc.iter().copied().collect();
        let Some(&start) = scc.iter().min_by_key(|n| graph[**n]) else {
            continue;
        };
        // Follow dependencies (reverse edges) inside the component back to start.
        let path = cycle_path(&graph, start, &members);
        let candidate: Vec<usize> = path.iter().map(|n| graph[*n]).collect();
        if best.as_ref().is_none_or(|b| candidate[0] < b[0]) {
            best = Some(candidate);
        }
    }
    best.map(|p| p.into_iter().map(|i| steps[i].id.clone()).collect())
}

/// A shortest cycle through `start` inside one strongly connected component,
/// following "depends on" (so `a -> b` reads "a depends on b").
fn cycle_path(
    graph: &DiGraph<usize, ()>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    use petgraph::Direction::Incoming;
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let neighbours = |n: NodeIndex| {
        let mut v: Vec<NodeIndex> = graph
            .neighbors_directed(n, Incoming)
            .filter(|m| members.contains(m))
            .collect();
        v.sort_by_key(|m| graph[*m]);
        v
    };
    while let Some(n) = queue.pop_front() {
        for m in neighbours(n) {
            if m == start {
                let mut path = vec![start];
                let mut cur = n;
                let mut back = vec![];
                while cur != start {
                    back.push(cur);
                    cur = prev[&cur];
                }
                back.reverse();
                path.extend(back);
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    vec![start, start]
}

/// Execution levels: a step's level is one more than its deepest dependency's.
/// Within a level, steps keep plan order. Assumes no cycle.
pub fn levels(steps: &[PlannedStep]) -> Vec<Vec<String>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut level: Vec<Option<usize>> = vec![None; steps.len()];
    // Iterative depth-first evaluation (plans can be deep chains).
    for start in 0..steps.len() {
        if level[start].is_some() {
            continue;
        }
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if level[i].is_some() {
                continue;
            }
            let deps: Vec<usize> = steps[i]
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect();
            if expanded || deps.iter().all(|d| level[*d].is_some()) {
                let l = deps
                    .iter()
                    .filter_map(|d| level[*d])
                    .max()
                    .map_or(0, |m| m + 1);
                level[i] = Some(l);
            } else {
                stack.push((i, true));
                for d in deps {
                    if level[d].is_none() {
                        stack.push((d, false));
                    }
                }
            }
        }
    }
    let max = level.iter().flatten().max().copied().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); max];
    for (i, l) in level.iter().enumerate() {
        if let Some(l) = l {
            out[*l].push(steps[i].id.clone());
        }
    }
    out
}
