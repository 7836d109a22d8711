//! Index arithmetic shared by convolution and pooling windows.

/// Output positions `o` in `0..out_len` whose input index `o*stride + offset` falls inside `0..in_len`,
/// as a half-open range (`offset` = kernel tap·dilation − padding, possibly negative).
pub fn valid_range(out_len: usize, in_len: usize, stride: usize, offset: isize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if offset >= 0 { 0 } else { ((-offset) + s - 1) / s };
    let room = in_len as isize - offset;
    let hi = if room <= 0 {
        0
    } else {
        ((room + s - 1) / s).min(out_len as isize)
    };
    let lo = lo.min(out_len as isize) as usize;
    (lo, (hi as usize).max(lo))
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    #[test]
    fn matches_brute_force() {
        for out_len in 1..6 {
            for in_len in 1..8 {
                for stride in 1..4 {
                    for offset in -4isize..5 {
                        let inside: Vec<usize> = (0..out_len)
                            .filter(|&o| {
                                let i = o as isize * stride as isize + offset;
                                i >= 0 && i < in_len as isize
                            })
                            .collect();
                        let (lo, hi) = valid_range(out_len, in_len, stride, offset);
                        assert_eq!(
                            (lo..hi).collect::<Vec<_>>(),
                            inside,
                            "{out_len} {in_len} {stride} {offset}"
                        );
                    }
                }
            }
        }
    }
}
