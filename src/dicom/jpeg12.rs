//! Sequential Huffman DCT JPEG (ISO 10918-1 processes 1, 2 and 4), written for the 12-bit samples of
//! DICOM JPEG Extended that `jpeg-decoder` refuses. Plain and small: one component plane per component,
//! a float IDCT rounded to the nearest integer, chroma up-sampled by replication.

/// Zig-zag position k → natural (row-major) index in an 8x8 block.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
    14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39,
    46, 53, 60, 61, 54, 47, 55, 62, 63,
];
const BLOCK: usize = 8;
const MAX_CODE_LENGTH: usize = 16;
const SOF0: u8 = 0xC0;
const SOF1: u8 = 0xC1;
const DHT: u8 = 0xC4;
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DQT: u8 = 0xDB;
const DRI: u8 = 0xDD;

/// Canonical Huffman table (ISO 10918-1 Annex C / F.2.2.3 decoding procedure).
#[derive(Clone, Default)]
struct Huffman {
    max_code: [i32; MAX_CODE_LENGTH + 1],
    min_code: [i32; MAX_CODE_LENGTH + 1],
    value_offset: [usize; MAX_CODE_LENGTH + 1],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8], values: &[u8]) -> Self {
        let mut table = Huffman {
            values: values.to_vec(),
            ..Default::default()
        };
        let (mut code, mut k) = (0i32, 0usize);
        for length in 1..=MAX_CODE_LENGTH {
            let n = counts[length - 1] as usize;
            table.value_offset[length] = k;
            table.min_code[length] = code;
            code += n as i32;
            k += n;
            table.max_code[length] = if n > 0 { code - 1 } else { -1 };
            code <<= 1;
        }
        table
    }

    fn decode(&self, bits: &mut BitReader) -> Result<u8, String> {
        let mut code = bits.bit() as i32;
        for length in 1..=MAX_CODE_LENGTH {
            if code <= self.max_code[length] {
                let index = self.value_offset[length] + (code - self.min_code[length]) as usize;
                return self
                    .values
                    .get(index)
                    .copied()
                    .ok_or_else(|| "Huffman value out of range".to_string());
            }
            code = (code << 1) | bits.bit() as i32;
        }
        Err("invalid Huffman code".to_string())
    }
}

/// Entropy-coded data reader: removes 0xFF00 stuffing, stops (feeding zeros) at a marker.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u32,
    count: u32,
    at_marker: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            acc: 0,
            count: 0,
            at_marker: false,
        }
    }

    fn next_byte(&mut self) -> u8 {
        if self.at_marker || self.pos >= self.data.len() {
            return 0;
        }
        let byte = self.data[self.pos];
        if byte != 0xFF {
            self.pos += 1;
            return byte;
        }
        match self.data.get(self.pos + 1) {
            Some(0) => {
                self.pos += 2;
                0xFF
            }
            _ => {
                self.at_marker = true;
                0
            }
        }
    }

    fn bit(&mut self) -> u32 {
        if self.count == 0 {
            self.acc = self.next_byte() as u32;
            self.count = 8;
        }
        self.count -= 1;
        (self.acc >> self.count) & 1
    }

    fn bits(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |v, _| (v << 1) | self.bit())
    }

    /// Skip to just after the next RSTn marker and forget buffered bits.
    fn restart(&mut self) -> Result<(), String> {
        self.count = 0;
        self.at_marker = false;
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
                self.pos += 2;
                return Ok(());
            }
            self.pos += 1;
        }
        Err("missing restart marker".to_string())
    }
}

/// Sign-extend a `size`-bit magnitude category value (ISO 10918-1 F.2.2.1 EXTEND).
fn extend(value: u32, size: u32) -> i32 {
    if size == 0 {
        0
    } else if value < (1 << (size - 1)) {
        value as i32 - (1 << size) + 1
    } else {
        value as i32
    }
}

#[derive(Clone, Default)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    dc_table: usize,
    ac_table: usize,
    /// Decoded samples, (blocks_high*8, blocks_wide*8) row-major.
    plane: Vec<i32>,
    blocks_wide: usize,
    blocks_high: usize,
    dc_pred: i32,
}

struct Decoder {
    quant: [[u16; 64]; 4],
    dc: [Huffman; 4],
    ac: [Huffman; 4],
    precision: u32,
    rows: usize,
    cols: usize,
    components: Vec<Component>,
    h_max: usize,
    v_max: usize,
    restart_interval: usize,
    idct: Idct,
}

/// Decode a sequential Huffman JPEG (8- or 12-bit) to interleaved samples (rows, cols, components).
pub fn decode(data: &[u8]) -> Result<Vec<u16>, String> {
    if data.get(..2) != Some(&[0xFF, SOI][..]) {
        return Err("no JPEG SOI marker".to_string());
    }
    let mut decoder = Decoder {
        quant: [[0; 64]; 4],
        dc: Default::default(),
        ac: Default::default(),
        precision: 0,
        rows: 0,
        cols: 0,
        components: Vec::new(),
        h_max: 1,
        v_max: 1,
        restart_interval: 0,
        idct: Idct::new(),
    };
    let mut pos = 2;
    loop {
        let (marker, segment_start) = next_marker(data, pos)?;
        if marker == EOI {
            break;
        }
        let length = u16::from_be_bytes([
            data[segment_start],
            *data.get(segment_start + 1).ok_or("truncated")?,
        ]) as usize;
        let segment = data
            .get(segment_start + 2..segment_start + length)
            .ok_or("marker segment past the end")?;
        pos = segment_start + length;
        match marker {
            SOF0 | SOF1 => decoder.read_frame(segment)?,
            0xC2..=0xCF if !matches!(marker, DHT | 0xC8 | 0xCC) => {
                return Err(format!(
                    "JPEG process with SOF marker FF{marker:02X} is not sequential Huffman"
                ))
            }
            DHT => decoder.read_huffman(segment)?,
            DQT => decoder.read_quant(segment)?,
            DRI => decoder.restart_interval = u16::from_be_bytes([segment[0], segment[1]]) as usize,
            SOS => pos = decoder.read_scan(data, segment, pos)?,
            _ => {}
        }
        if pos >= data.len() {
            break;
        }
    }
    decoder.output()
}

/// Find the next marker at or after `pos`; returns it and the index of its length field.
fn next_marker(data: &[u8], mut pos: usize) -> Result<(u8, usize), String> {
    while pos + 1 < data.len() {
        if data[pos] == 0xFF
            && data[pos + 1] != 0
            && data[pos + 1] != 0xFF
            && !(0xD0..=0xD7).contains(&data[pos + 1])
        {
            return Ok((data[pos + 1], pos + 2));
        }
        pos += 1;
    }
    Ok((EOI, data.len()))
}

impl Decoder {
    fn read_frame(&mut self, s: &[u8]) -> Result<(), String> {
        self.precision = s[0] as u32;
        if self.precision != 8 && self.precision != 12 {
            return Err(format!(
                "DCT sample precision {} (8 or 12 expected)",
                self.precision
            ));
        }
        self.rows = u16::from_be_bytes([s[1], s[2]]) as usize;
        self.cols = u16::from_be_bytes([s[3], s[4]]) as usize;
        let count = s[5] as usize;
        if self.rows == 0 || self.cols == 0 || count == 0 || s.len() < 6 + 3 * count {
            return Err("invalid JPEG frame header".to_string());
        }
        self.components = (0..count)
            .map(|c| {
                let b = &s[6 + 3 * c..9 + 3 * c];
                Component {
                    id: b[0],
                    h: (b[1] >> 4) as usize,
                    v: (b[1] & 15) as usize,
                    quant: (b[2] & 3) as usize,
                    ..Default::default()
                }
            })
            .collect();
        if self
            .components
            .iter()
            .any(|c| c.h == 0 || c.v == 0 || c.h > 4 || c.v > 4)
        {
            return Err("invalid JPEG sampling factors".to_string());
        }
        self.h_max = self.components.iter().map(|c| c.h).max().unwrap_or(1);
        self.v_max = self.components.iter().map(|c| c.v).max().unwrap_or(1);
        let mcus_wide = self.cols.div_ceil(BLOCK * self.h_max);
        let mcus_high = self.rows.div_ceil(BLOCK * self.v_max);
        for c in &mut self.components {
            c.blocks_wide = mcus_wide * c.h;
            c.blocks_high = mcus_high * c.v;
            c.plane = vec![0; c.blocks_wide * c.blocks_high * BLOCK * BLOCK];
        }
        Ok(())
    }

    fn read_huffman(&mut self, mut s: &[u8]) -> Result<(), String> {
        while s.len() >= 17 {
            let (class, id) = ((s[0] >> 4) as usize, (s[0] & 3) as usize);
            let counts = &s[1..17];
            let total: usize = counts.iter().map(|&n| n as usize).sum();
            let values = s.get(17..17 + total).ok_or("truncated Huffman table")?;
            let table = Huffman::new(counts, values);
            if class == 0 {
                self.dc[id] = table;
            } else {
                self.ac[id] = table;
            }
            s = &s[17 + total..];
        }
        Ok(())
    }

    fn read_quant(&mut self, mut s: &[u8]) -> Result<(), String> {
        while !s.is_empty() {
            let (wide, id) = (s[0] >> 4 == 1, (s[0] & 3) as usize);
            let len = if wide { 128 } else { 64 };
            let body = s.get(1..1 + len).ok_or("truncated quantization table")?;
            for k in 0..64 {
                self.quant[id][ZIGZAG[k]] = if wide {
                    u16::from_be_bytes([body[2 * k], body[2 * k + 1]])
                } else {
                    body[k] as u16
                };
            }
            s = &s[1 + len..];
        }
        Ok(())
    }

    /// Decode one scan; returns the position after its entropy-coded data.
    fn read_scan(&mut self, data: &[u8], s: &[u8], start: usize) -> Result<usize, String> {
        if self.components.is_empty() {
            return Err("scan before frame header".to_string());
        }
        let count = s[0] as usize;
        let mut members = Vec::with_capacity(count);
        for i in 0..count {
            let (id, tables) = (s[1 + 2 * i], s[2 + 2 * i]);
            let index = self
                .components
                .iter()
                .position(|c| c.id == id)
                .ok_or("scan names an unknown component")?;
            self.components[index].dc_table = (tables >> 4) as usize & 3;
            self.components[index].ac_table = (tables & 15) as usize & 3;
            self.components[index].dc_pred = 0;
            members.push(index);
        }
        let mut bits = BitReader::new(data, start);
        if members.len() == 1 {
            self.decode_single(&mut bits, members[0])?;
        } else {
            self.decode_interleaved(&mut bits, &members)?;
        }
        Ok(bits.pos)
    }

    fn restart_due(&self, unit: usize) -> bool {
        self.restart_interval > 0 && unit > 0 && unit % self.restart_interval == 0
    }

    fn restart(&mut self, bits: &mut BitReader) -> Result<(), String> {
        bits.restart()?;
        self.components.iter_mut().for_each(|c| c.dc_pred = 0);
        Ok(())
    }

    /// Non-interleaved scan: the component's own blocks, only those covering the image.
    fn decode_single(&mut self, bits: &mut BitReader, index: usize) -> Result<(), String> {
        let c = &self.components[index];
        let wide = (self.cols * c.h).div_ceil(self.h_max).div_ceil(BLOCK);
        let high = (self.rows * c.v).div_ceil(self.v_max).div_ceil(BLOCK);
        for unit in 0..wide * high {
            if self.restart_due(unit) {
                self.restart(bits)?;
            }
            self.decode_block(bits, index, unit % wide, unit / wide)?;
        }
        Ok(())
    }

    fn decode_interleaved(&mut self, bits: &mut BitReader, members: &[usize]) -> Result<(), String> {
        let mcus_wide = self.cols.div_ceil(BLOCK * self.h_max);
        let mcus_high = self.rows.div_ceil(BLOCK * self.v_max);
        for mcu in 0..mcus_wide * mcus_high {
            if self.restart_due(mcu) {
                self.restart(bits)?;
            }
            let (mx, my) = (mcu % mcus_wide, mcu / mcus_wide);
            for &index in members {
                let (h, v) = (self.components[index].h, self.components[index].v);
                for by in 0..v {
                    for bx in 0..h {
                        self.decode_block(bits, index, mx * h + bx, my * v + by)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Huffman-decode, dequantize and inverse-transform one block into the component plane.
    fn decode_block(
        &mut self,
        bits: &mut BitReader,
        index: usize,
        bx: usize,
        by: usize,
    ) -> Result<(), String> {
        let c = &self.components[index];
        let mut coef = [0i32; 64];
        let size = self.dc[c.dc_table].decode(bits)? as u32;
        let dc = c.dc_pred + extend(bits.bits(size), size);
        coef[0] = dc * self.quant[c.quant][0] as i32;
        let mut k = 1;
        while k < 64 {
            let rs = self.ac[c.ac_table].decode(bits)?;
            let (run, size) = ((rs >> 4) as usize, (rs & 15) as u32);
            if size == 0 {
                if run != 15 {
                    break; // end of block
                }
                k += 16;
                continue;
            }
            k += run;
            if k >= 64 {
                return Err("AC coefficient index past 63".to_string());
            }
            coef[ZIGZAG[k]] = extend(bits.bits(size), size) * self.quant[c.quant][ZIGZAG[k]] as i32;
            k += 1;
        }
        let samples = self.idct.inverse(&coef, self.precision);
        let c = &mut self.components[index];
        c.dc_pred = dc;
        let stride = c.blocks_wide * BLOCK;
        for y in 0..BLOCK {
            let row = (by * BLOCK + y) * stride + bx * BLOCK;
            c.plane[row..row + BLOCK].copy_from_slice(&samples[y * BLOCK..(y + 1) * BLOCK]);
        }
        Ok(())
    }

    /// Interleave the component planes at full resolution (chroma replicated).
    fn output(&self) -> Result<Vec<u16>, String> {
        if self.components.is_empty() {
            return Err("no JPEG frame header".to_string());
        }
        let mut out = Vec::with_capacity(self.rows * self.cols * self.components.len());
        for y in 0..self.rows {
            for x in 0..self.cols {
                for c in &self.components {
                    let (cy, cx) = (y * c.v / self.v_max, x * c.h / self.h_max);
                    out.push(c.plane[cy * c.blocks_wide * BLOCK + cx] as u16);
                }
            }
        }
        Ok(out)
    }
}

/// Separable float inverse DCT (ISO 10918-1 A.3.3), rounded to nearest, level-shifted and clamped.
#[derive(Default)]
struct Idct {
    /// basis[u][x] = C(u)/2 · cos((2x+1)uπ/16)
    basis: [[f64; BLOCK]; BLOCK],
}

impl Idct {
    fn new() -> Self {
        let mut basis = [[0.0; BLOCK]; BLOCK];
        for (u, row) in basis.iter_mut().enumerate() {
            let scale = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            } / 2.0;
            for (x, value) in row.iter_mut().enumerate() {
                *value = scale * (((2 * x + 1) * u) as f64 * std::f64::consts::PI / 16.0).cos();
            }
        }
        Idct { basis }
    }

    /// coef: (8, 8) row-major, dequantized → samples (8, 8).
    fn inverse(&self, coef: &[i32; 64], precision: u32) -> [i32; 64] {
        let mut rows = [0.0f64; 64]; // (v, x): horizontal pass
        for v in 0..BLOCK {
            for x in 0..BLOCK {
                rows[v * BLOCK + x] = (0..BLOCK)
                    .map(|u| self.basis[u][x] * coef[v * BLOCK + u] as f64)
                    .sum();
            }
        }
        let shift = 1i32 << (precision - 1);
        let max = (1i32 << precision) - 1;
        let mut out = [0i32; 64];
        for y in 0..BLOCK {
            for x in 0..BLOCK {
                let s: f64 = (0..BLOCK).map(|v| self.basis[v][y] * rows[v * BLOCK + x]).sum();
                out[y * BLOCK + x] = (s.round() as i32 + shift).clamp(0, max);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_only_block_is_flat() {
        // A DC coefficient of 8·d gives a flat block of d above the level shift.
        let idct = Idct::new();
        let mut coef = [0i32; 64];
        coef[0] = 8 * 100;
        let out = idct.inverse(&coef, 12);
        assert!(out.iter().all(|&s| s == 2048 + 100), "{out:?}");
    }

    #[test]
    fn extend_follows_the_standard() {
        assert_eq!(extend(0b0, 1), -1);
        assert_eq!(extend(0b1, 1), 1);
        assert_eq!(extend(0b010, 3), -5);
        assert_eq!(extend(0b110, 3), 6);
    }

    #[test]
    fn huffman_canonical_codes() {
        // Two 2-bit codes (00 → 5, 01 → 6) and one 3-bit code (100 → 7).
        let mut counts = [0u8; 16];
        counts[1] = 2;
        counts[2] = 1;
        let table = Huffman::new(&counts, &[5, 6, 7]);
        let data = [0b0001_1000];
        let mut bits = BitReader::new(&data, 0);
        assert_eq!(table.decode(&mut bits).unwrap(), 5);
        assert_eq!(table.decode(&mut bits).unwrap(), 6);
        assert_eq!(table.decode(&mut bits).unwrap(), 7);
    }
}
