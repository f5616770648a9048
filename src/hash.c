#include "hash.h"

#include <openssl/evp.h>
#include <stdio.h>

#include "util.h"

int hash_parts_hex(const char *const *parts, size_t n_parts, size_t n_hex, char *ret)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned md_len = 0;
	EVP_MD_CTX *ctx;
	int ok;

	if (n_hex % 2 || n_hex > HASH_HEX_MAX)
		return -EINVAL;
	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (size_t i = 0; ok && i < n_parts; i++)
		ok = EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + (i + 1 < n_parts));
	ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len);
	EVP_MD_CTX_free(ctx);
	if (!ok || md_len * 2 < n_hex)
		return -EIO;
	for (size_t i = 0; i < n_hex / 2; i++)
		snprintf(ret + 2 * i, 3, "%02x", md[i]);
	ret[n_hex] = '\0';
	return 0;
}
