//! Delta debugging (Zeller's ddmin): the smallest subsequence that still
//! fails, found by removing chunks, then single items.

/// A 1-minimal subsequence of `items` for which `fails` holds; `fails`
/// must hold for `items` itself.
pub fn ddmin<T: Clone>(items: Vec<T>, mut fails: impl FnMut(&[T]) -> bool) -> Vec<T> {
    let mut current = items;
    let mut granularity = 2;
    while current.len() >= 2 {
        let chunk = current.len().div_ceil(granularity);
        let chunks: Vec<Vec<T>> = current.chunks(chunk).map(<[T]>::to_vec).collect();
        let mut reduced = false;
        for (index, _) in chunks.iter().enumerate() {
            if chunks.len() == 1 {
                break;
            }
            let without: Vec<T> = chunks
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .flat_map(|(_, c)| c.iter().cloned())
                .collect();
            if fails(&without) {
                current = without;
                granularity = (granularity - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if granularity >= current.len() {
                break;
            }
            granularity = (granularity * 2).min(current.len());
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_two_items_that_matter() {
        let items: Vec<u32> = (0..20).collect();
        let mut tries = 0;
        let found = ddmin(items, |candidate| {
            tries += 1;
            candidate.contains(&3) && candidate.contains(&17)
        });
        assert_eq!(found, [3, 17]);
        assert!(tries < 60, "{tries} tries");
    }

    #[test]
    fn order_is_kept() {
        let found = ddmin((0..10).collect::<Vec<u32>>(), |c| {
            let a = c.iter().position(|&x| x == 2);
            let b = c.iter().position(|&x| x == 7);
            matches!((a, b), (Some(a), Some(b)) if a < b)
        });
        assert_eq!(found, [2, 7]);
    }
}
